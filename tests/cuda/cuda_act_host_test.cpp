// Host-side checks of the activation kernels' arithmetic, layout tricks and work plans
// (act_quant.cu, fp8_act.cu); they need no GPU: the smoothing division by reciprocal pairs
// (smooth_div.hpp) and the fp8 division by the row's reciprocal (row_div.hpp) against the float32
// division, the int4 rounding by a magic constant, the permuted k order of pack_proj_down against
// a host model of the kernel's lane -> register mapping and of mma.m16n8k16, and the single-pass
// fp8 kernel's planner (fp8_act_plan) and shared-memory bank layout.
#include <gtest/gtest.h>

#ifdef SVDQUANT_HAVE_CUDA
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "fp8_act.hpp"
#include "row_div.hpp"
#include "sm90_pack.hpp"
#include "smooth_div.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/tensor.hpp"

using namespace svdquant;

namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Every finite T value a (both signs) against a sample of divisors b: where the range test passes,
// the fast quotient is the float32 division bit for bit (the full 2^30 pairs per dtype were checked
// once the same way; see smooth_div.hpp).
TEST(ActKernelHost, SmoothDivisionMatchesFloatDivision) {
  for (HalfKind T : {HalfKind::BF16, HalfKind::FP16}) {
    const uint16_t inf = T == HalfKind::BF16 ? 0x7F80 : 0x7C00;
    std::vector<float> divisors;
    std::mt19937 rng(7);
    for (int i = 0; i < 160; ++i) divisors.push_back(half_to_f32(T, uint16_t(1 + rng() % (inf - 1))));
    for (uint16_t b : {uint16_t(1), uint16_t(2), uint16_t(3), uint16_t(0x3F80), uint16_t(0x3C00), uint16_t(inf - 1),
                       uint16_t(0x0080), uint16_t(0x0400), uint16_t(0x3555), uint16_t(0x7777)})
      divisors.push_back(half_to_f32(T, b));
    int64_t fast = 0, bad = 0;
    for (float b0 : divisors)
      for (float b : {b0, -b0}) {
        const cuda::SmoothRcp r = cuda::smooth_reciprocal(b);
        for (uint32_t h = 0; h < 0x10000; ++h) {
          if ((h & 0x7FFF) >= inf) continue;
          const float a = half_to_f32(T, uint16_t(h));
          const float q = cuda::smooth_quotient(a, r);
          if (!cuda::smooth_quotient_ok(q)) continue;
          ++fast;
          bad += bits_of(q) != bits_of(a / b);
        }
      }
    EXPECT_EQ(bad, 0) << (T == HalfKind::BF16 ? "bf16" : "fp16");
    EXPECT_GT(fast, int64_t(divisors.size()) * 40000) << "the fast path covers ordinary values";
    // Zeros, infinities and NaN never take the fast path.
    const cuda::SmoothRcp one = cuda::smooth_reciprocal(1.5f);
    for (float a : {0.0f, -0.0f, INFINITY, -INFINITY, NAN})
      EXPECT_FALSE(cuda::smooth_quotient_ok(cuda::smooth_quotient(a, one)));
    for (float b : {0.0f, INFINITY, NAN})
      EXPECT_FALSE(cuda::smooth_quotient_ok(cuda::smooth_quotient(1.0f, cuda::smooth_reciprocal(b))));
  }
}

// row_quotient (row_div.hpp): x / s through RN(1/s) and one correction step. Every x with 11
// significant bits (all bf16 and fp16 significands) against a sample of float32 significands of s
// (the full 2^23 were checked once the same way: 2^33 pairs, no mismatch), at several exponents
// of x and s inside the fast range; then the fast range's edges, where tiny quotients must give
// the same e4m3 code (with the sign of zero) as the division.
TEST(ActKernelHost, RowQuotientMatchesFloatDivision) {
  std::mt19937 rng(19);
  std::vector<uint32_t> sig;  // fraction bits of s
  for (uint32_t m : {0u, 1u, 2u, 0x7FFFFFu, 0x7FFFFEu, 0x400000u, 0x3FFFFFu, 0x555555u, 0x2AAAAAu}) sig.push_back(m);
  for (int i = 0; i < 3000; ++i) sig.push_back(rng() & 0x7FFFFFu);
  int64_t n = 0, bad = 0;
  for (int se : {-64, -20, 0, 7, 63})    // s = 2^se * 1.m
    for (int xe : {-12, -1, 0, 8}) {     // x / s around 2^(xe - se) ... stays a normal quotient
      for (uint32_t m : sig) {
        const float s = std::ldexp(1.0f + float(m) * 0x1p-23f, se);
        const float r = cuda::row_reciprocal(s);
        for (int i = 0; i < 2048; ++i) {
          const float x = std::ldexp((1.0f + float(i % 1024) / 1024.0f) * (i < 1024 ? 1.0f : -1.0f), xe + se);
          ++n;
          bad += bits_of(cuda::row_quotient(x, s, r)) != bits_of(x / s);
        }
      }
    }
  EXPECT_EQ(bad, 0) << "of " << n;
  EXPECT_GT(n, int64_t(60'000'000));
  // The edges of the fast range, every bf16 x with |x / s| <= 448 (1 + 2^-22): the e4m3 codes
  // agree, tiny and underflowing quotients and both zeros included.
  int64_t codes = 0, bad_codes = 0;
  for (float s0 : {cuda::kRowFastMin, cuda::kRowFastMax, 0x1.fffffep-64f, 0x1.000002p+63f})
    for (uint32_t m : {0u, 1u, 0x123457u, 0x7FFFFFu}) {
      const float s = s0 * (1.0f + float(m) * 0x1p-23f) > cuda::kRowFastMax ? s0 : s0 * (1.0f + float(m) * 0x1p-23f);
      ASSERT_TRUE(cuda::row_fast_ok(s));
      const float r = cuda::row_reciprocal(s);
      for (uint32_t h = 0; h < 0x10000; ++h) {
        const float x = bf16_to_f32(uint16_t(h));
        if (!(std::fabs(x / s) <= 448.0001f)) continue;
        ++codes;
        bad_codes += f32_to_e4m3(cuda::row_quotient(x, s, r)) != f32_to_e4m3(x / s);
      }
    }
  EXPECT_EQ(bad_codes, 0) << "of " << codes;
  EXPECT_GT(codes, int64_t(100'000));
  EXPECT_EQ(f32_to_e4m3(cuda::row_quotient(-0.0f, 3.0f, cuda::row_reciprocal(3.0f))), 0x80) << "-0 keeps its sign";
  for (float s : {0.0f, 0x1p-65f, 0x1p65f, INFINITY, NAN}) EXPECT_FALSE(cuda::row_fast_ok(s));
}

// int4_codes8: rne(q) from the low 16 bits of q + (1.5 * 2^23 + 1536), read as an fp16 1536 + n.
TEST(ActKernelHost, MagicRoundingIsRoundToNearestEven) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-24.0f, 24.0f);
  std::vector<float> qs;
  for (int i = 0; i < 200000; ++i) qs.push_back(u(rng));
  for (int n = -24; n <= 24; ++n) {
    qs.push_back(float(n) + 0.5f);  // ties
    qs.push_back(std::nextafter(float(n) + 0.5f, 100.0f));
    qs.push_back(std::nextafter(float(n) + 0.5f, -100.0f));
    qs.push_back(float(n));
  }
  qs.push_back(-0.0f);
  int64_t bad = 0;
  for (float q : qs) {
    const float r = q + 12609024.0f;
    const float v = fp16_to_f32(uint16_t(bits_of(r) & 0xFFFF)) - 1536.0f;
    bad += v != std::nearbyint(q);
  }
  EXPECT_EQ(bad, 0);
}

// The kernel uses lane (g8 = lane / 4, t = lane % 4)'s x words directly as A fragments: for k half
// h and sub-step s, a0 = row g8 word 2s, a1 = row g8 + 8 word 2s, a2 = row g8 word 2s + 1,
// a3 = row g8 + 8 word 2s + 1, word w holding columns 32h + 8t + 2w, +1; b0, b1 = words 2s,
// 2s + 1 of pack_proj_down's 16 bytes for (g, h, j, lane). Modelling mma.m16n8k16's fragment
// ownership (a0: A[g8][2t, 2t+1], a1: A[g8+8][2t, 2t+1], a2: A[g8][2t+8, 2t+9], a3: A[g8+8][..];
// b0: B[2t, 2t+1][g8], b1: B[2t+8, 2t+9][g8]), the MMAs must add up to x · proj_down exactly.
TEST(ActKernelHost, ProjDownFragmentsMatchTheKernelsKOrder) {
  const int64_t K = 128, R = 20, Rpad = 32, RT = Rpad / 8, G = K / 64;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-4, 4);
  Tensor pd = Tensor::zeros(DType::BF16, {K, R});
  std::vector<float> pdv(size_t(K * R)), xv(size_t(16 * K));
  for (int64_t i = 0; i < K * R; ++i) {
    pdv[size_t(i)] = float(small(rng));
    pd.data_as<uint16_t>()[i] = f32_to_bf16(pdv[size_t(i)]);
  }
  for (auto& v : xv) v = float(small(rng));
  const std::vector<uint32_t> frag = cuda::pack_proj_down(pd, K, R, Rpad);
  ASSERT_EQ(frag.size(), size_t(G * 2 * RT * 32 * 4));
  auto lo = [](uint32_t w) { return bf16_to_f32(uint16_t(w & 0xFFFF)); };
  auto hi = [](uint32_t w) { return bf16_to_f32(uint16_t(w >> 16)); };
  std::vector<double> c(size_t(16 * Rpad), 0.0);
  for (int64_t g = 0; g < G; ++g)
    for (int h = 0; h < 2; ++h)
      for (int s = 0; s < 2; ++s)
        for (int64_t j = 0; j < RT; ++j) {
          float A[16][16] = {}, B[16][8] = {};
          for (int lane = 0; lane < 32; ++lane) {
            const int g8 = lane / 4, t = lane % 4;
            auto xword = [&](int row, int w) {  // (x[row][k], x[row][k + 1]) as the kernel loads them
              const int64_t k = g * 64 + 32 * h + 8 * t + 2 * w;
              return std::pair<float, float>{xv[size_t(row * K + k)], xv[size_t(row * K + k + 1)]};
            };
            const auto a0 = xword(g8, 2 * s), a1 = xword(g8 + 8, 2 * s), a2 = xword(g8, 2 * s + 1),
                       a3 = xword(g8 + 8, 2 * s + 1);
            A[g8][2 * t] = a0.first, A[g8][2 * t + 1] = a0.second;
            A[g8 + 8][2 * t] = a1.first, A[g8 + 8][2 * t + 1] = a1.second;
            A[g8][2 * t + 8] = a2.first, A[g8][2 * t + 9] = a2.second;
            A[g8 + 8][2 * t + 8] = a3.first, A[g8 + 8][2 * t + 9] = a3.second;
            const uint32_t* f = &frag[size_t((((g * 2 + h) * RT + j) * 32 + lane) * 4)];
            const uint32_t b0 = f[2 * s], b1 = f[2 * s + 1];
            B[2 * t][g8] = lo(b0), B[2 * t + 1][g8] = hi(b0);
            B[2 * t + 8][g8] = lo(b1), B[2 * t + 9][g8] = hi(b1);
          }
          for (int row = 0; row < 16; ++row)
            for (int n = 0; n < 8; ++n)
              for (int ks = 0; ks < 16; ++ks) c[size_t(row * Rpad + 8 * j + n)] += double(A[row][ks]) * B[ks][n];
        }
  int64_t bad = 0;
  for (int row = 0; row < 16; ++row)
    for (int64_t n = 0; n < Rpad; ++n) {
      double want = 0;
      if (n < R)
        for (int64_t k = 0; k < K; ++k) want += double(xv[size_t(row * K + k)]) * pdv[size_t(k * R + n)];
      bad += c[size_t(row * Rpad + n)] != want;
    }
  EXPECT_EQ(bad, 0);
}

// fp8_act_plan: every plan it returns is one fp8_act_make_plan builds (chunks covering K exactly,
// at most kFp8MaxCluster, the shared memory within the budget of fp8_act_blocks_per_sm blocks per
// SM: 228 KB per SM, 1 KB reserved per block, 1 KB of static shared memory), expansion rows only
// where asked for and with room for the tile images; and it finds one for every K up to 12288.
TEST(Fp8ActPlanHost, PlansAreConsistent) {
  int64_t plans = 0, carried = 0;
  for (int sms : {132, 114, 78})
    for (int64_t M : {1, 7, 64, 128, 129, 256, 1000, 4096, 4608, 4609, 16384})
      for (int64_t K : {64, 128, 512, 1600, 2048, 3072, 12288, 16384})
        for (int Rpad : {0, 8, 16, 32, 64, 128})
          for (int64_t tiles : {int64_t(0), int64_t(80), int64_t(1152), int64_t(9216)}) {
            const cuda::Fp8ActPlan pl = cuda::fp8_act_plan(M, K, Rpad, tiles, sms);
            const int64_t G = K / 64;
            if (K <= 12288) {
              ASSERT_NE(pl.rows, 0) << "M " << M << " K " << K << " R " << Rpad;
            }
            if (pl.rows == 0) continue;
            ++plans;
            EXPECT_TRUE(pl.rows == 16 || pl.rows == 32 || pl.rows == 64);
            EXPECT_GE(pl.cluster, 1);
            EXPECT_LE(pl.cluster, cuda::kFp8MaxCluster);
            EXPECT_GE(int64_t(pl.cluster) * pl.groups, G);
            EXPECT_LT(int64_t(pl.cluster - 1) * pl.groups, G);
            EXPECT_EQ(pl.stages, std::min(pl.groups, 4));
            const int64_t need = int64_t(pl.rows) * (pl.groups * 128 + 16) +  // xs, then fragments and reciprocals or sums
                                 std::max<int64_t>(pl.staged ? int64_t(pl.groups) * (Rpad * 128 + 512) : 0, int64_t(pl.rows) * Rpad * 4);
            EXPECT_GE(pl.smem, need);
            EXPECT_LE(pl.smem, 233472 / cuda::fp8_act_blocks_per_sm(Rpad) - 2048);
            EXPECT_GE(pl.exp_rows, 0);
            if (pl.exp_rows > 0) {
              ++carried;
              EXPECT_GT(tiles, 0);
              EXPECT_GE(pl.smem, 4 * 8192) << "the expansion blocks' tile images";
            }
            cuda::Fp8ActPlan same = cuda::fp8_act_make_plan(pl.rows, pl.cluster, K, Rpad, pl.exp_rows > 0);
            same.exp_rows = pl.exp_rows;
            EXPECT_TRUE(same.rows == pl.rows && same.cluster == pl.cluster && same.groups == pl.groups &&
                        same.stages == pl.stages && same.smem == pl.smem && same.staged == pl.staged);
            // The chunking, and so the low-rank sums' bits, does not depend on the expansion.
            const cuda::Fp8ActPlan bare = cuda::fp8_act_plan(M, K, Rpad, 0, sms);
            EXPECT_TRUE(bare.rows == pl.rows && bare.cluster == pl.cluster && bare.groups == pl.groups);
          }
  EXPECT_GT(plans, 6000);
  EXPECT_GT(carried, 100) << "the expansion is carried where the last wave has room";
}

// The plans of the shapes the kernel was sized for (H200, 132 SMs; the header's budget), and the
// limits: a chunk of xs that does not fit even at 16 rows and 8 chunks has no plan (the two-pass
// path), and make_plan refuses what the kernel cannot run.
TEST(Fp8ActPlanHost, PlansOfTheTargetShapes) {
  const cuda::Fp8ActPlan big = cuda::fp8_act_plan(4608, 3072, 32, 0, 132);
  EXPECT_EQ(big.rows, 64);
  EXPECT_EQ(big.cluster, 6);
  EXPECT_EQ(big.groups, 8);
  EXPECT_TRUE(big.staged);
  const cuda::Fp8ActPlan big_exp = cuda::fp8_act_plan(4608, 3072, 32, 24 * 48, 132);
  EXPECT_TRUE(big_exp.rows == 64 && big_exp.cluster == 6) << "the expansion does not change the chunking";
  const cuda::Fp8ActPlan small = cuda::fp8_act_plan(256, 3072, 32, 0, 132);
  EXPECT_EQ(small.rows, 16);
  EXPECT_EQ(small.cluster, 8);
  const cuda::Fp8ActPlan flux = cuda::fp8_act_plan(4608, 12288, 32, 0, 132);
  EXPECT_EQ(flux.rows, 32);
  EXPECT_EQ(flux.cluster, 8);
  EXPECT_EQ(cuda::fp8_act_plan(4608, 64 * 600, 32, 0, 132).rows, 0) << "K = 38400 does not fit";
  EXPECT_EQ(cuda::fp8_act_plan(0, 3072, 32, 0, 132).rows, 0);
  EXPECT_EQ(cuda::fp8_act_make_plan(48, 4, 3072, 32, false).rows, 0) << "rows 16, 32 or 64";
  EXPECT_EQ(cuda::fp8_act_make_plan(64, 4, 3072, 24, false).rows, 0) << "no kernel for Rpad 24";
  EXPECT_EQ(cuda::fp8_act_make_plan(64, 9, 64 * 9, 32, false).rows, 0) << "at most 8 chunks";
  EXPECT_EQ(cuda::fp8_act_make_plan(64, 1, 3072, 32, false).rows, 0) << "384 KB of xs";
  const cuda::Fp8ActPlan k64 = cuda::fp8_act_make_plan(64, 8, 64, 0, false);
  EXPECT_EQ(k64.cluster, 1);
  EXPECT_EQ(k64.groups, 1);
  EXPECT_EQ(k64.stages, 1);
}

// The xs rows are (groups * 128 + 16) bytes apart, so that every shared-memory access of a warp
// moves its bytes in the fewest wavefronts (4 per 512 bytes: each 16-byte bank group hit by 4
// lanes): pass 1's loads and stores (lane 4 g8 + t: row g8 (+ 8), bytes 128 g + 64 h + 16 t) and
// the code pass's loads (lane: row lane / 4 of an 8-row slab, bytes 128 g + 32 (lane % 4) (+ 16)).
TEST(Fp8ActPlanHost, SharedMemoryAccessesAreConflictFree) {
  for (int groups : {1, 2, 7, 24, 48}) {
    const uint32_t pitch = uint32_t(groups) * 128 + 16;
    auto worst = [&](auto byte_of_lane) {
      int most = 0;
      int hits[8] = {};
      for (int lane = 0; lane < 32; ++lane) ++hits[(byte_of_lane(lane) / 16) % 8];
      for (int h : hits) most = std::max(most, h);
      return most;
    };
    for (int g = 0; g < groups; ++g)
      for (int h = 0; h < 2; ++h)
        for (int r = 0; r < 2; ++r) {
          EXPECT_EQ(worst([&](int lane) { return uint32_t(lane / 4 + 8 * r) * pitch + 128u * g + 64u * h + 16u * (lane % 4); }), 4);
        }
    for (int sl = 0; sl < 8; ++sl)
      for (int g = 0; g < groups; ++g)
        for (int half = 0; half < 2; ++half)
          EXPECT_EQ(worst([&](int lane) { return uint32_t(sl * 8 + lane / 4) * pitch + 128u * g + 32u * (lane % 4) + 16u * half; }), 4);
  }
}

}  // namespace

#endif  // SVDQUANT_HAVE_CUDA
