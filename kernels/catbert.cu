// catbert's own CUDA kernels. Each has a CPU twin in src/kernels/ that is its test oracle.
// Compiled to PTX by build.rs (only with the `cuda` feature) and loaded by name at run time.

#include <stdint.h>
#include <math.h>

// One warp-sized block per row keeps rows independent; classes are few (2..hundreds), so a
// row fits one block and needs no atomics.
#define ROW_THREADS 128

__device__ __forceinline__ float block_reduce_max(float v, float *shared) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = (threadIdx.x < blockDim.x / 32) ? shared[lane] : -INFINITY;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    if (threadIdx.x == 0) shared[0] = v;
    __syncthreads();
    v = shared[0];
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_reduce_sum(float v, float *shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = (threadIdx.x < blockDim.x / 32) ? shared[lane] : 0.0f;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    if (threadIdx.x == 0) shared[0] = v;
    __syncthreads();
    v = shared[0];
    __syncthreads();
    return v;
}

// Class-weighted softmax cross-entropy, forward and backward in one pass over the logits.
// out is (rows, classes + 1): column 0 = this row's share of the weighted-mean loss,
// w_y * (logsumexp - x_y) / total_weight; columns 1.. = d loss / d logits of the row,
// (w_y / total_weight) * (softmax - onehot(y)).
extern "C" __global__ void weighted_ce_fwd_bwd_f32(
    const float *logits, const uint32_t *labels, const float *weights, float total_weight,
    int classes, float *out) {
    __shared__ float shared[32];
    int row = blockIdx.x;
    const float *x = logits + (size_t)row * classes;
    float *o = out + (size_t)row * (classes + 1);
    float m = -INFINITY;
    for (int c = threadIdx.x; c < classes; c += blockDim.x) m = fmaxf(m, x[c]);
    m = block_reduce_max(m, shared);
    float s = 0.0f;
    for (int c = threadIdx.x; c < classes; c += blockDim.x) s += expf(x[c] - m);
    s = block_reduce_sum(s, shared);
    uint32_t y = labels[row];
    float coef = weights[y] / total_weight;
    for (int c = threadIdx.x; c < classes; c += blockDim.x) {
        float p = expf(x[c] - m) / s;
        o[1 + c] = coef * (p - (c == (int)y ? 1.0f : 0.0f));
    }
    if (threadIdx.x == 0) o[0] = coef * (logf(s) + m - x[y]);
}

// Softmax + top-k per row: out is (rows, 2k) = k probabilities (best first) then their class
// indices as floats. Ties go to the lower class index. One thread per row: k and the class
// count are small, and only 2k values per row leave the GPU.
extern "C" __global__ void softmax_topk_f32(const float *logits, int rows, int classes, int k, float *out) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    const float *x = logits + (size_t)row * classes;
    float *o = out + (size_t)row * 2 * k;
    float m = -INFINITY;
    for (int c = 0; c < classes; ++c) m = fmaxf(m, x[c]);
    float s = 0.0f;
    for (int c = 0; c < classes; ++c) s += expf(x[c] - m);
    float prev_v = INFINITY;
    int prev_i = -1;
    for (int r = 0; r < k; ++r) {
        // The best entry ranked after (prev_v, prev_i) in (value desc, index asc) order.
        float best_v = -INFINITY;
        int best_i = -1;
        for (int c = 0; c < classes; ++c) {
            float v = x[c];
            bool after_prev = v < prev_v || (v == prev_v && c > prev_i);
            if (after_prev && (best_i < 0 || v > best_v)) { best_v = v; best_i = c; }
        }
        o[r] = expf(best_v - m) / s;
        o[k + r] = (float)best_i;
        prev_v = best_v;
        prev_i = best_i;
    }
}

__device__ __forceinline__ float gelu_erf(float h) { return 0.5f * h * (1.0f + erff(h * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_erf_grad(float h) {
    return 0.5f * (1.0f + erff(h * 0.70710678118654752f)) + h * 0.39894228040143268f * expf(-0.5f * h * h);
}

// y = gelu(x + bias), x (n, d) contiguous, bias (d): one pass instead of add then GELU.
extern "C" __global__ void bias_gelu_f32(const float *x, const float *bias, size_t n, int d, float *y) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = gelu_erf(x[i] + bias[i % d]);
}

// dx = dy * gelu'(x + bias): the backward of bias_gelu (dbias is the column sum of dx).
extern "C" __global__ void bias_gelu_bwd_f32(const float *x, const float *bias, const float *dy, size_t n, int d, float *dx) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = dy[i] * gelu_erf_grad(x[i] + bias[i % d]);
}
