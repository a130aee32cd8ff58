"""Numpy-only reference port of bitsandbytes' QLoRA NF4 4-bit quantisation.

Purpose: byte-exact oracle for lamina's C++ NF4 code.  No torch, no
bitsandbytes: only numpy.  The code below restates bitsandbytes' behaviour in
our own words; it is not copied from it.

Provenance
----------
Repository  github.com/bitsandbytes-foundation/bitsandbytes
Read at     main @ 95f9af309d4d5793847169c39288dcd3fcbdf564 (2026-08-19,
            __version__ "0.50.2.dev0").  The current release, tag 0.50.1
            (37d2a9387f7146ccb85517ff45c665d345bfda79), has the same content in
            every file cited here: `git diff 0.50.1 HEAD` over bitsandbytes/ and
            csrc/ only touches triton/kernels_4bit.py, csrc/gemm_4bit.cu and
            __init__.py.  Line numbers below are for that commit.
Files       bitsandbytes/functional.py          (F)
            bitsandbytes/backends/default/ops.py (D)  pure-torch kernels
            bitsandbytes/backends/cpu/ops.py     (C)  CPU kernels (native lib)
            bitsandbytes/backends/utils.py       (U)
            csrc/cpu_ops.cpp                     (CPP)
            csrc/kernels.cu, csrc/ops.cu         (CU)
torch (for create_dynamic_map and the mean): pytorch/pytorch
            aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp (linspace),
            aten/src/ATen/native/cpu/SumKernel.cpp (cascade_sum),
            aten/src/ATen/TensorIteratorReduce.cpp (two_pass_reduction).

Which code path a CPU user gets (load_in_4bit on CPU, bnb 0.50.1)
-------------------------------------------------------------------
* quantize_4bit: there is no "cpu" kernel for bitsandbytes::quantize_4bit, so
  CPU tensors go to the "default" (pure torch) kernel, D:233-259.
* The nested absmax quantisation calls quantize_blockwise(..., blocksize=256)
  (F:940) -> the "cpu" kernel C:38 -> lib.cquantize_blockwise_cpu_fp32 (C:48)
  -> quantize_cpu_impl, CPP:575-665 (a 65536-entry look-up table, see below).
  Without the native library it would fall back to D:180-196 ("torch" rule).
* dequantize_blockwise -> C:94/101 -> dequantizeBlockwise8bitCpu, CPP:436-488.
* dequantize_4bit -> C:139/211 -> dequantizeBlockwise4bitCpu, CPP:305-434
  (odd shape[-1], or AVX512 with blocksize >= 2048, use D:263-285 instead;
  all paths compute the same float32 product, see dequantize_nf4).

Semantic decisions (and where they come from)
---------------------------------------------
NF4 code book   F:788-805 literal list, torch.tensor(...) => float32 (all 16
                literals are exact float32 values), divided by its max |.|
                (=1.0, no change) F:855.  Identical tables in U:14-31,
                CPP:283-300 and kernels.cu:26.
Flattening      A.reshape(-1).float() (D:238); Params4bit._quantize passes
                .contiguous() data, so C order.  bf16/fp16 -> float32 exact.
Blocks          blocksize default 64 (F:917), one float32 absmax per block,
                blocks = ceil(n / blocksize); the last block may be partial.
absmax          max |x| over the block (D:244, D:247), float32, exact.
                Full blocks store the raw max (0.0 for an all-zero block);
                the partial last block stores max(|x|).clamp(min=1e-38), so
                an all-zero partial block stores float32(1e-38) (a subnormal).
Scaling         full blocks: x * (1 / max(absmax, 1e-38)) -- torch evaluates
                `1.0 / t` as t.reciprocal() * 1.0, i.e. one float32 division
                for the reciprocal then one float32 multiply (D:245).
                partial block: x / am, a true float32 division (D:249).
                Both are then clamped to [-1, 1].
NF4 index       thresholds T[k] = float32(float32(c[k] + c[k+1]) / 2),
                k = 0..14 (D:229); q = torch.bucketize(s, T) (D:252), i.e.
                q = #{k : T[k] < s}: a value equal to a threshold goes to the
                LOWER code.  The CUDA kernel's decision tree dQuantizeNF4
                (kernels.cu:110-157) uses `x > t` with literal thresholds whose
                float32 values are bit-identical to T (checked in the
                self-test), so CPU and CUDA agree for every finite s.
Packing         q8[0::2] << 4 | q8[1::2] (D:256): element 2i -> HIGH nibble,
                element 2i+1 -> LOW nibble of byte i.  Odd n: the scaled
                vector is padded with one 0.0 (D:250-251), which encodes as
                index 7, so the last byte's low nibble is 7.  Output is
                ((n+1)//2, 1) uint8; we return it flat.  CUDA packs the same
                way (kernels.cu:364-365, 455-456).
Double quant    compress_statistics=True (F:938-951):
                offset = absmax.mean() (float32; torch CPU = cascade sum then
                sum / float32(n), see torch_mean_f32), then
                quantize_blockwise(absmax - offset, blocksize=256) with the
                default code create_dynamic_map() (F:653-656).  State:
                state.absmax = uint8 codes (one per 4-bit block),
                state.offset = float32 0-dim, state.state2.absmax = float32
                (one per 256 codes), state.state2.code = dynamic map,
                state2.blocksize = 256.  Serialised (QuantState.as_dict) as
                absmax, nested_absmax, nested_quant_map, nested_offset (float).
Dynamic map     create_dynamic_map(signed=True, max_exponent_bits=7,
                total_bits=8), F:296-348.  torch.linspace(0.1, 1, k, float32)
                on CPU is a scalar loop (RangeFactoriesKernel.cpp):
                step = float32(1 - f32(0.1)) / (k-1); element i is
                start + step*i for i < k//2, else end - step*(k-1-i).  In the
                AVX2/AVX512 builds GCC contracts that into one FMA; the table
                produced that way matches, bit for bit, a create_dynamic_map()
                output printed by a bitsandbytes user and kept in a public
                repository, while the non-fused variant differs in 42 entries
                (fma=False is kept as an option).  means = (b[:-1]+b[1:])/2 in float32;
                scaled by float32(10**(i-6)) (the Python scalar is cast to
                float32 before the multiply); both signs; then 0 and 1.0;
                sorted ascending -> 256 float32, code[127] = 0, code[255] = 1,
                code[0] = -0.99296875.
8-bit rule      CPU native ("cpu", CPP:496-571, 618-661, what CPU users get):
                  absmax_b = max |x| (start 0.0); all-zero block -> codes 0,
                  absmax 0.  inv = 1.0f/absmax_b; s = x*inv;
                  s = clamp(s, -1, 1); u = ((s + 1) * 0.5) * 65535 + 0.5
                  (the last multiply-add compiled as one FMA under
                  -mfma/GCC's default -ffp-contract=fast; fma=False gives the
                  two-rounding variant), j = trunc(u) in [0, 65535];
                  code index = LUT[j] where LUT[j] = #{i : mid[i] < v_j},
                  mid[i] = 0.5f*(code[i]+code[i+1]),
                  v_j = -1.0f + (2.0f*j)/65535.0f.
                  NOTE: this is a grid approximation: near 0 the dynamic map
                  is finer than the 2/65535 grid, so e.g. s == 0 encodes as
                  index 131 (2.125e-5), not 127.
                pure torch ("torch", D:180-196): like the NF4 rule above:
                  bucketize on float32 midpoints, ties -> lower index,
                  partial block divides, stores clamp(1e-38).
                CUDA ("cuda", kernels.cu:160-213 dQuantize<0>): 7-step binary
                  search from pivot 127, then compares with the float32
                  midpoint (neighbour + val) * 0.5f; exactly at a midpoint it
                  keeps the last pivot visited (so a tie may go either way).
Dequantisation  nested absmax: a = float32(code[q] * nested_absmax[i // 256])
                (CPP:475, kernels dDequantizeBlockwise), THEN
                a = float32(a + offset) as a separate torch op (F:1053-1054):
                two roundings, no FMA.  Values: out = float32(NF4[nibble] *
                a[i // blocksize]) (CPP:411-413, D:275-284); high nibble
                first.  Returned as float32 (bf16/fp16 output is a later cast).

Differences CPU (0.50.x) vs CUDA, noted but not the default here
------------------------------------------------------------------
* All-zero block: CPU default stores absmax 0 and codes 7 (byte 0x77); CUDA
  computes 1/0 = inf, 0*inf = NaN, and dQuantizeNF4(NaN) = 0 (byte 0x00).
* Partial last block: CPU divides (x / am) and stores clamp(am, 1e-38); CUDA
  multiplies by 1.0f/am and stores am unclamped.
* 8-bit nested codes: LUT (CPU) vs binary search (CUDA) differ widely for
  small |s|; offset: the CUDA mean reduces in another order (not emulated;
  pass offset= to inject a known one).
* NaN input: CPU bucketize gives 15, CUDA tree gives 0 (not tested here).
* bnb <= 0.49.x used argmin(|s - code|) for NF4 on CPU and an exact
  nearest-neighbour search (ties to the lower index) for 8-bit; 0.50.0
  replaced both (bucketize, LUT).
* CPU AVX512 4-bit dequant (CPP:355-398) looks up
  absmax[row * (n // bs) + col // bs], which is the flat block index only
  when shape[-1] % blocksize == 0.  For other shapes we follow the flat
  index (scalar path, default path, CUDA).
* dequantize_4bit returns out.t() when the packed tensor has 1 row
  (n <= 2), F:1075-1076; not emulated.
* Inference on AVX512-BF16 CPUs repacks the weight lazily at forward time
  (_convert_weight_packed_for_cpu) and undoes it when saving; that is a
  kernel layout, not the quantize_4bit output emulated here.

torch float32 mean (offset): reproduced in torch_mean_f32 for a 1-D
contiguous float32 tensor: cascade_sum (SumKernel.cpp) with Vectorized<float>
width W (8 on AVX2/DEFAULT/aarch64, 16 on AVX512; default 8 here) and, when
numel >= 32768 and more than one thread is used, two_pass_reduction over
at::get_num_threads() chunks.  Single-thread, W=8 is our default; the
offset therefore depends on the machine bitsandbytes ran on for big tensors.
"""

import math

import numpy as np

_F32 = np.float32
_F64 = np.float64

# ----------------------------------------------------------------------------
# NF4 code book and thresholds
# ----------------------------------------------------------------------------

NF4_CODE = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=_F32,
)

# D:229 -- midpoints of neighbouring code values, float32 add then /2.
NF4_THRESHOLDS = ((NF4_CODE[:-1] + NF4_CODE[1:]) / _F32(2.0)).astype(_F32)

# The 15 constants of the CUDA decision tree (kernels.cu:110-157), ascending,
# as written there (double literals with an f suffix -> float32).
_CUDA_NF4_TREE_CONSTANTS = (
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
)
CUDA_NF4_THRESHOLDS = np.array(_CUDA_NF4_TREE_CONSTANTS, dtype=_F64).astype(_F32)

_VALID_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_NESTED_BLOCKSIZE = 256
_TORCH_GRAIN_SIZE = 32768


def nf4_index(s):
    """Code index for already-scaled float32 values (vectorised).

    index = number of thresholds strictly below s; equality -> lower index.
    Equivalent to torch.bucketize(s, NF4_THRESHOLDS, right=False).
    """
    s = np.asarray(s, dtype=_F32)
    return np.searchsorted(NF4_THRESHOLDS, s, side="left").astype(np.uint8)


def nf4_index_tree(x):
    """Scalar walk of the CUDA dQuantizeNF4 tree (kernels.cu:110-157).

    A balanced 4-level tree over the 16 leaves: at the node covering leaves
    [lo, hi) it tests `x > t[mid-1]` with mid = (lo+hi)//2 and goes to the
    upper half when true.  The root therefore tests 0.0397901..., then
    0.3893125... / -0.3396794..., and so on, exactly the nesting in the
    kernel.  A NaN makes every test false -> 0.
    """
    x = _F32(x)
    lo, hi = 0, 16
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if x > CUDA_NF4_THRESHOLDS[mid - 1]:
            lo = mid
        else:
            hi = mid
    return lo


# ----------------------------------------------------------------------------
# create_dynamic_map
# ----------------------------------------------------------------------------


def _torch_linspace_f32(start, end, steps, fma=True):
    """torch.linspace(start, end, steps, dtype=float32) on CPU."""
    if steps == 1:
        return np.array([_F32(start)], dtype=_F32)
    s = _F32(start)
    e = _F32(end)
    step = _F32(_F32(e - s) / _F32(steps - 1))
    half = steps // 2
    out = np.empty(steps, dtype=_F32)
    for i in range(steps):
        if i < half:
            k = i
            if fma:  # single rounding of s + step*k (exact in float64)
                out[i] = _F32(_F64(s) + _F64(step) * k)
            else:
                out[i] = _F32(s + _F32(step * _F32(k)))
        else:
            k = steps - i - 1
            if fma:
                out[i] = _F32(_F64(e) - _F64(step) * k)
            else:
                out[i] = _F32(e - _F32(step * _F32(k)))
    return out


def dynamic_map(signed=True, max_exponent_bits=7, total_bits=8, fma=True):
    """bitsandbytes.functional.create_dynamic_map, float32, 2**total_bits entries.

    fma=True reproduces torch's CPU linspace as built for AVX2/AVX512/aarch64
    (fused multiply-add); fma=False the non-fused DEFAULT-capability build.
    """
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1

    def scaled_means(i, count):
        b = _torch_linspace_f32(0.1, 1.0, count, fma=fma)
        means = ((b[:-1] + b[1:]) / _F32(2.0)).astype(_F32)
        scale = 10 ** (-(max_exponent_bits - 1) + i)  # Python int or float
        vals = [float(v) for v in (_F32(scale) * means).astype(_F32)]
        if signed:
            vals += [float(v) for v in (_F32(-scale) * means).astype(_F32)]
        return vals

    i = 0
    for i in range(max_exponent_bits):
        if signed:
            fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        else:
            fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        data += scaled_means(i, fraction_items)
    if additional_items > 0:
        # reuses the loop's last i, as the original does
        data += scaled_means(i, additional_items + 1)
    data.append(0.0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data += [0.0] * (256 - len(data))
    data.sort()
    return np.array(data, dtype=_F32)


# ----------------------------------------------------------------------------
# torch CPU float32 sum / mean (for the nested offset)
# ----------------------------------------------------------------------------


def _ceil_log2(x):
    return 1 if x <= 2 else int(x - 1).bit_length()


def _multi_row_sum(rows):
    """SumKernel.cpp multi_row_sum; rows: (size, nrows, W) float32."""
    size = rows.shape[0]
    num_levels = 4
    level_power = max(4, _ceil_log2(size) // num_levels)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = np.zeros((num_levels,) + rows.shape[1:], dtype=_F32)
    i = 0
    while i + level_step <= size:
        for _ in range(level_step):
            acc[0] = acc[0] + rows[i]
            i += 1
        for j in range(1, num_levels):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = 0
            if (i & (level_mask << (j * level_power))) != 0:
                break
    while i < size:
        acc[0] = acc[0] + rows[i]
        i += 1
    for j in range(1, num_levels):
        acc[0] = acc[0] + acc[j]
    return acc[0]


def _row_sum(elems):
    """SumKernel.cpp row_sum with ilp_factor 4; elems: (size, W) float32."""
    size = elems.shape[0]
    ilp = 4
    size_ilp = size // ilp
    partial = _multi_row_sum(elems[: size_ilp * ilp].reshape(size_ilp, ilp, elems.shape[1]))
    p0 = partial[0].copy()
    for i in range(size_ilp * ilp, size):
        p0 = p0 + elems[i]
    for k in range(1, ilp):
        p0 = p0 + partial[k]
    return p0


def _torch_inner_sum(x, vec_width):
    """One call of cascade_sum's loop over a contiguous 1-D float32 chunk."""
    n = x.shape[0]
    if n >= vec_width:  # vectorized_inner_sum
        vec_size = n // vec_width
        vacc = _row_sum(x[: vec_size * vec_width].reshape(vec_size, vec_width))
        final = _F32(0.0)
        for k in range(vec_size * vec_width, n):
            final = _F32(final + x[k])
        for k in range(vec_width):
            final = _F32(final + vacc[k])
        return final
    return _F32(_row_sum(x.reshape(n, 1))[0])  # scalar_inner_sum


def torch_sum_f32(x, vec_width=8, num_threads=1):
    """torch.sum of a 1-D contiguous float32 CPU tensor, bit-exact model."""
    x = np.ascontiguousarray(x, dtype=_F32).reshape(-1)
    n = x.shape[0]
    if n == 0:
        return _F32(0.0)
    if n < _TORCH_GRAIN_SIZE or num_threads <= 1:
        return _F32(_F32(0.0) + _torch_inner_sum(x, vec_width))
    # two_pass_reduction: one partial per thread, then reduce the partials
    tasks = min(num_threads, -(-n // _TORCH_GRAIN_SIZE))
    chunk = -(-n // tasks)
    buf = np.zeros(num_threads, dtype=_F32)
    for t in range(tasks):
        b = t * chunk
        if b < n:
            buf[t] = _F32(_F32(0.0) + _torch_inner_sum(x[b : min(n, b + chunk)], vec_width))
    return _F32(_F32(0.0) + _torch_inner_sum(buf, vec_width))


def torch_mean_f32(x, vec_width=8, num_threads=1):
    """torch.mean on CPU float32: sum, then divide by float32(numel)."""
    x = np.asarray(x, dtype=_F32).reshape(-1)
    return _F32(torch_sum_f32(x, vec_width, num_threads) / _F32(x.shape[0]))


# ----------------------------------------------------------------------------
# 8-bit blockwise quantisation against the dynamic map (nested absmax)
# ----------------------------------------------------------------------------

_LUT_CACHE = {}


def _cpu_lut(code):
    key = code.tobytes()
    lut = _LUT_CACHE.get(key)
    if lut is None:
        mid = (_F32(0.5) * (code[:-1] + code[1:])).astype(_F32)
        j = np.arange(65536, dtype=_F32)
        v = (_F32(-1.0) + (_F32(2.0) * j) / _F32(65535.0)).astype(_F32)
        lut = np.searchsorted(mid, v, side="left").astype(np.uint8)
        _LUT_CACHE[key] = lut
    return lut


def _lut_slot(s, fma=True):
    s = np.clip(s, _F32(-1.0), _F32(1.0)).astype(_F32)
    t = ((s + _F32(1.0)) * _F32(0.5)).astype(_F32)
    if fma:  # t*65535 + 0.5 is exact in float64, so this is one rounding
        u = (t.astype(_F64) * 65535.0 + 0.5).astype(_F32)
    else:
        u = ((t * _F32(65535.0)).astype(_F32) + _F32(0.5)).astype(_F32)
    return u.astype(np.uint16)  # truncation toward zero, u >= 0.5


def _cuda_dquantize(code, x):
    """kernels.cu dQuantize<0> (non-stochastic), vectorised."""
    shape = x.shape
    pivot = np.full(shape, 127, dtype=np.int64)
    upper_p = np.full(shape, 255, dtype=np.int64)
    lower_p = np.zeros(shape, dtype=np.int64)
    lower = np.full(shape, -1.0, dtype=_F32)
    upper = np.full(shape, 1.0, dtype=_F32)
    val = code[pivot]
    step = 64
    while step > 0:
        gt = x > val
        lower_p = np.where(gt, pivot, lower_p)
        lower = np.where(gt, val, lower)
        upper_p = np.where(gt, upper_p, pivot)
        upper = np.where(gt, upper, val)
        pivot = np.where(gt, pivot + step, pivot - step)
        val = code[pivot]
        step >>= 1
    upper = np.where(upper_p == 255, code[255], upper).astype(_F32)
    lower = np.where(lower_p == 0, code[0], lower).astype(_F32)
    gt = x > val
    mid_up = ((upper + val) * _F32(0.5)).astype(_F32)
    mid_lo = ((lower + val) * _F32(0.5)).astype(_F32)
    res = np.where(gt, np.where(x > mid_up, upper_p, pivot), np.where(x < mid_lo, lower_p, pivot))
    return res.astype(np.uint8)


def quantize_blockwise_8bit(a, code=None, blocksize=256, rule="cpu", fma=True):
    """bitsandbytes quantize_blockwise for a float32 vector.

    rule: "cpu"   native CPU library (0.50.x, what CPU users get)
          "torch" pure-torch default kernel (D:180-196)
          "cuda"  kQuantizeBlockwise / dQuantize<0>
    Returns (codes uint8 same length, absmax float32 per block).
    """
    if code is None:
        code = dynamic_map()
    code = np.asarray(code, dtype=_F32)
    a = np.ascontiguousarray(a, dtype=_F32).reshape(-1)
    n = a.shape[0]
    nblocks = -(-n // blocksize)
    full = n // blocksize
    rem = n - full * blocksize
    out = np.zeros(n, dtype=np.uint8)
    absmax = np.zeros(nblocks, dtype=_F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if rule == "cpu":
            lut = _cpu_lut(code)
            for b in range(nblocks):
                blk = a[b * blocksize : min(n, (b + 1) * blocksize)]
                am = _F32(np.max(np.abs(blk))) if blk.size else _F32(0.0)
                am = max(am, _F32(0.0))
                absmax[b] = am
                if am == _F32(0.0):
                    continue  # codes stay 0
                inv = _F32(_F32(1.0) / am)
                s = (blk * inv).astype(_F32)
                out[b * blocksize : b * blocksize + blk.size] = lut[_lut_slot(s, fma)]
        elif rule == "torch":
            bounds = ((code[:-1] + code[1:]) / _F32(2.0)).astype(_F32)
            parts = []
            if full:
                blk = a[: full * blocksize].reshape(full, blocksize)
                am = np.max(np.abs(blk), axis=1).astype(_F32)
                absmax[:full] = am
                inv = (_F32(1.0) / np.maximum(am, _F32(1e-38))).astype(_F32)
                parts.append(np.clip(blk * inv[:, None], _F32(-1), _F32(1)).reshape(-1))
            if rem:
                tail = a[full * blocksize :]
                am = max(_F32(np.max(np.abs(tail))), _F32(1e-38))
                absmax[full] = am
                parts.append(np.clip((tail / am).astype(_F32), _F32(-1), _F32(1)))
            s = np.concatenate(parts).astype(_F32) if parts else np.zeros(0, _F32)
            out[:] = np.searchsorted(bounds, s, side="left").astype(np.uint8)
        elif rule == "cuda":
            for b in range(nblocks):
                blk = a[b * blocksize : min(n, (b + 1) * blocksize)]
                am = _F32(np.max(np.abs(blk)))
                absmax[b] = am
                inv = _F32(_F32(1.0) / am)
                out[b * blocksize : b * blocksize + blk.size] = _cuda_dquantize(code, (blk * inv).astype(_F32))
        else:
            raise ValueError(rule)
    return out, absmax


def dequantize_blockwise_8bit(q, absmax, code=None, blocksize=256):
    """code[q] * absmax[block], one float32 rounding (CPP:475)."""
    if code is None:
        code = dynamic_map()
    code = np.asarray(code, dtype=_F32)
    q = np.asarray(q, dtype=np.uint8).reshape(-1)
    absmax = np.asarray(absmax, dtype=_F32)
    idx = np.arange(q.shape[0]) // blocksize
    return (code[q] * absmax[idx]).astype(_F32)


# ----------------------------------------------------------------------------
# NF4 quantize / dequantize
# ----------------------------------------------------------------------------


def _pack(q):
    q = q.astype(np.uint8)
    if q.shape[0] % 2:
        q = np.concatenate([q, np.array([7], dtype=np.uint8)])  # padded 0.0 -> 7
    return ((q[0::2] << 4) | q[1::2]).astype(np.uint8)


def _unpack(packed, n):
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    idx = np.empty(packed.shape[0] * 2, dtype=np.uint8)
    idx[0::2] = packed >> 4
    idx[1::2] = packed & 0x0F
    return idx[:n]


def quantize_nf4(
    x,
    blocksize=64,
    compress_statistics=True,
    backend="cpu",
    nested_rule=None,
    offset=None,
    mean_vec_width=8,
    mean_threads=1,
    fma=True,
):
    """bitsandbytes.functional.quantize_4bit(x, quant_type="nf4").

    backend      "cpu"  (default): the pure-torch kernel used for CPU tensors
                 "cuda": kQuantizeBlockwise[Small] semantics
    nested_rule  8-bit rule for the absmax codes; defaults to "cpu" (native
                 CPU library) for backend "cpu" and "cuda" for backend "cuda".
    offset       override the float32 mean (e.g. with bitsandbytes' own value)
    mean_*       torch CPU reduction parameters, see torch_mean_f32.

    Returns a dict:
      packed     uint8, ((n+1)//2,), element 2i in the high nibble
      blocksize, shape, n
      absmax     float32 per block          (compress_statistics=False)
      absmax_q   uint8 per block             (compress_statistics=True)
      offset     float32 scalar
      nested_absmax float32 per 256 codes, nested_code (dynamic map),
      nested_blocksize 256
    """
    if blocksize not in _VALID_BLOCKSIZES:
        raise ValueError("invalid blocksize %r" % (blocksize,))
    arr = np.asarray(x, dtype=_F32)
    shape = tuple(arr.shape)
    a = np.ascontiguousarray(arr).reshape(-1)
    n = a.shape[0]
    full = n // blocksize
    rem = n - full * blocksize
    nblocks = full + (1 if rem else 0)
    absmax = np.zeros(nblocks, dtype=_F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if backend == "cpu":
            parts = []
            if full:
                blk = a[: full * blocksize].reshape(full, blocksize)
                am = np.max(np.abs(blk), axis=1).astype(_F32)
                absmax[:full] = am
                inv = (_F32(1.0) / np.maximum(am, _F32(1e-38))).astype(_F32)
                parts.append(np.clip((blk * inv[:, None]).astype(_F32), _F32(-1), _F32(1)).reshape(-1))
            if rem:
                tail = a[full * blocksize :]
                am = max(_F32(np.max(np.abs(tail))), _F32(1e-38))
                absmax[full] = am
                parts.append(np.clip((tail / am).astype(_F32), _F32(-1), _F32(1)))
            s = np.concatenate(parts).astype(_F32) if parts else np.zeros(0, _F32)
            q = nf4_index(s)
        elif backend == "cuda":
            q = np.zeros(n, dtype=np.uint8)
            for b in range(nblocks):
                blk = a[b * blocksize : min(n, (b + 1) * blocksize)]
                am = _F32(np.max(np.abs(blk)))
                absmax[b] = am
                s = (blk * _F32(_F32(1.0) / am)).astype(_F32)
                qb = nf4_index(s)
                qb[np.isnan(s)] = 0  # the tree sends NaN to 0
                q[b * blocksize : b * blocksize + blk.size] = qb
        else:
            raise ValueError(backend)
    packed = _pack(q)
    if backend == "cuda" and n % 2 and absmax[-1] == 0:
        packed[-1] &= 0xF0  # CUDA pads with 0 too, but 0 * (1/0) = NaN -> 0
    state = {"packed": packed, "blocksize": blocksize, "shape": shape, "n": n}
    if not compress_statistics:
        state["absmax"] = absmax
        return state
    if offset is None:
        offset = torch_mean_f32(absmax, mean_vec_width, mean_threads)
    offset = _F32(offset)
    centred = (absmax - offset).astype(_F32)
    code = dynamic_map(fma=fma)
    rule = nested_rule or ("cuda" if backend == "cuda" else "cpu")
    absmax_q, nested_absmax = quantize_blockwise_8bit(
        centred, code, _NESTED_BLOCKSIZE, rule=rule, fma=fma
    )
    state.update(
        {
            "absmax_q": absmax_q,
            "offset": offset,
            "nested_absmax": nested_absmax,
            "nested_code": code,
            "nested_blocksize": _NESTED_BLOCKSIZE,
        }
    )
    return state


def dequantize_absmax(state):
    """Per-block float32 absmax of a state (nested or not)."""
    if "absmax_q" not in state:
        return np.asarray(state["absmax"], dtype=_F32)
    a = dequantize_blockwise_8bit(
        state["absmax_q"], state["nested_absmax"], state["nested_code"], state["nested_blocksize"]
    )
    return (a + _F32(state["offset"])).astype(_F32)


def dequantize_nf4(state, shape=None):
    """bitsandbytes.functional.dequantize_4bit (nf4) -> float32 array."""
    if shape is None:
        shape = state["shape"]
    n = int(np.prod(shape)) if len(shape) else 1
    absmax = dequantize_absmax(state)
    idx = _unpack(state["packed"], n)
    blk = np.arange(n) // state["blocksize"]
    out = (NF4_CODE[idx] * absmax[blk]).astype(_F32)
    return out.reshape(shape)


# ----------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------


def _self_test():
    f = _F32
    # code book
    assert NF4_CODE.shape == (16,) and NF4_CODE.dtype == np.float32
    assert np.all(np.diff(NF4_CODE) > 0) and NF4_CODE[7] == 0 and NF4_CODE[0] == -1 and NF4_CODE[15] == 1
    assert float(NF4_CODE[1]) == -0.6961928009986877 and float(NF4_CODE[14]) == 0.7229568362236023
    # CPU midpoints == CUDA tree constants (as float32)
    assert np.array_equal(NF4_THRESHOLDS.view(np.int32), CUDA_NF4_THRESHOLDS.view(np.int32))

    # tree == bucketize, including exactly-at-threshold and +-1 ulp values
    rng = np.random.default_rng(0)
    probe = list(rng.uniform(-1.1, 1.1, 3000).astype(f))
    for t in NF4_THRESHOLDS:
        probe += [t, np.nextafter(t, f(-2)), np.nextafter(t, f(2))]
    probe = np.array(probe, dtype=f)
    assert np.array_equal(nf4_index(probe), np.array([nf4_index_tree(v) for v in probe]))
    for k, t in enumerate(NF4_THRESHOLDS):  # tie -> lower
        assert nf4_index(t) == k and nf4_index(np.nextafter(t, f(2))) == k + 1

    # dynamic map
    dm = dynamic_map()
    assert dm.shape == (256,) and dm.dtype == np.float32 and np.all(np.diff(dm) > 0)
    assert dm[127] == 0 and dm[255] == 1 and dm[0] == f(-0.99296875)
    known = {18: -0.7398437261581421, 20: -0.7117187976837158, 39: -0.44453126192092896,
             65: -0.09578125923871994, 126: -5.500000384017767e-07, 128: 5.500000384017767e-07,
             254: 0.992968738079071}
    for i, v in known.items():
        assert float(dm[i]) == v, (i, float(dm[i]), v)
    assert np.array_equal(dm[:127], -dm[128:255][::-1])
    # sum of the 256 float32 bit patterns of the table a bnb user printed
    assert int(dm.view(np.uint32).astype(np.uint64).sum()) == 535306620548
    assert dynamic_map(fma=False)[18] != dm[18]
    assert dynamic_map(signed=False).shape == (256,)

    # packing / nibble order / zero and partial blocks
    st = quantize_nf4(np.array([-1.0, 1.0, 0.0, 0.5], f), compress_statistics=False)
    assert st["packed"].tolist() == [0x0F, 0x7C] and st["absmax"].tolist() == [1.0]
    st = quantize_nf4(np.zeros(128, f), compress_statistics=False)
    assert set(st["packed"].tolist()) == {0x77} and st["absmax"].tolist() == [0.0, 0.0]
    st = quantize_nf4(np.zeros(65, f), compress_statistics=False)  # partial zero block
    assert st["absmax"][1] == f(1e-38) and st["packed"][-1] == 0x77
    st = quantize_nf4(np.zeros(64, f), compress_statistics=False, backend="cuda")
    assert set(st["packed"].tolist()) == {0x00}
    x = np.linspace(-3, 3, 7).astype(f)  # odd n: pad nibble = 7
    st = quantize_nf4(x, compress_statistics=False)
    assert st["packed"].shape == (4,) and (st["packed"][-1] & 0x0F) == 7
    assert (st["packed"][-1] >> 4) == 15

    # 8-bit rules
    lut_q, _ = quantize_blockwise_8bit(np.array([0.0, 1.0, -1.0, 0.5], f), dm, rule="cpu")
    assert lut_q.tolist()[1:3] == [255, 0] and lut_q[0] == 131  # LUT grid: 0 -> 2.125e-5
    tq, _ = quantize_blockwise_8bit(np.array([0.0, 1.0, -1.0], f), dm, rule="torch")
    cq, _ = quantize_blockwise_8bit(np.array([0.0, 1.0, -1.0], f), dm, rule="cuda")
    assert tq.tolist() == [127, 255, 0] and cq.tolist() == [127, 255, 0]
    v = rng.uniform(-1, 1, 4096).astype(f)
    v[0] = 1.0
    for rule in ("cpu", "torch", "cuda"):
        q8, am8 = quantize_blockwise_8bit(v, dm, rule=rule)
        err = np.abs(dequantize_blockwise_8bit(q8, am8, dm) - v)
        assert err.max() < 0.01, (rule, err.max())

    # torch sum model: close to the exact sum
    big = rng.uniform(0, 4, 100003).astype(f)
    exact = float(np.sum(big.astype(np.float64)))
    for w, th in ((8, 1), (16, 1), (8, 4)):
        assert abs(float(torch_sum_f32(big, w, th)) - exact) < 1e-5 * exact
    assert torch_sum_f32(np.arange(5, dtype=f)) == 10.0

    # round trip, nested and not, full and partial blocks, bf16-like input
    for shape in ((64, 256), (3, 100), (7,), (256 * 64 * 2 + 33,)):
        w = rng.standard_normal(shape).astype(f)
        w = (w.view(np.uint32) & np.uint32(0xFFFF0000)).view(f)  # bf16 grid
        for cs in (False, True):
            st = quantize_nf4(w, compress_statistics=cs)
            nb = -(-w.size // 64)
            assert st["packed"].shape == ((w.size + 1) // 2,) and st["packed"].dtype == np.uint8
            if cs:
                assert st["absmax_q"].shape == (nb,) and st["nested_absmax"].shape == (-(-nb // 256),)
                assert isinstance(st["offset"], np.float32)
            dq = dequantize_nf4(st, shape)
            assert dq.dtype == np.float32 and dq.shape == shape
            am = np.repeat(dequantize_absmax(st), 64)[: w.size].reshape(shape)
            true_am = np.repeat(quantize_nf4(w, compress_statistics=False)["absmax"], 64)[: w.size].reshape(shape)
            # widest NF4 gap is -1 .. -0.6961928 (0.3038072): half of it, plus absmax error
            half_gap = f(np.max(np.diff(NF4_CODE)) / 2)
            bound = (half_gap + f(1e-6)) * true_am + np.abs(am - true_am) * f(1.0001) + f(1e-5) * true_am
            assert np.all(np.abs(dq - w) <= bound), shape
            # absmax decoding never moves by more than the 8-bit grid allows
            assert np.all(np.abs(am - true_am) <= 0.01 * np.max(true_am) + 1e-6)

    # dequantisation formula, order of operations
    st = quantize_nf4(rng.standard_normal(512).astype(f), compress_statistics=True)
    a_hat = (st["nested_code"][st["absmax_q"]] * st["nested_absmax"][0]).astype(f)
    a_hat = (a_hat + st["offset"]).astype(f)
    assert np.array_equal(dequantize_absmax(st), a_hat)
    print("bnb_nf4_ref self-test: OK")


if __name__ == "__main__":
    _self_test()
