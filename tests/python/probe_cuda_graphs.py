"""Diagnostic (not a test): how the cuda-sm90 layer behaves around CUDA-graph capture."""
import torch

from svdquant.nn import SVDQuantLinear

torch.manual_seed(0)
lin = torch.nn.Linear(256, 256).to(torch.bfloat16)
x = torch.randn(8, 256, device="cuda", dtype=torch.bfloat16)


def report(what, fn):
    try:
        print(what, "->", fn())
    except Exception as e:  # noqa: BLE001
        print(what, "->", type(e).__name__, str(e)[:300])


m = SVDQuantLinear.from_linear(lin)
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    ref = m(x)
torch.cuda.synchronize()
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g, stream=s):
    y = m(x)
g.replay()
torch.cuda.synchronize()
report("replay == eager", lambda: torch.equal(y, ref))
report("eager on the default stream after capture on s", lambda: torch.equal(m(x), ref))

m2 = SVDQuantLinear.from_linear(lin)
m2(x)
torch.cuda.synchronize()


def capture_other_stream():
    g2 = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g2):
        y2 = m2(x)
    g2.replay()
    torch.cuda.synchronize()
    return torch.equal(y2, ref)


report("capture on torch's capture stream after eager warm-up on the default stream", capture_other_stream)


def reduce_overhead():
    m3 = SVDQuantLinear.from_linear(lin)
    f = torch.compile(m3, mode="reduce-overhead")
    for _ in range(3):
        z = f(x)
    torch.cuda.synchronize()
    return torch.equal(z.clone(), ref)


report("torch.compile(mode='reduce-overhead')", reduce_overhead)
