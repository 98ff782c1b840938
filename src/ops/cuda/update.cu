// In-place optimizer updates on the GPU, one thread per value: the kernels
// behind src/ops/inplace.rs's `Kernel`s, each the same arithmetic, in the
// same order, as that kernel's CPU form. Every kernel has the one signature
// `(dst, a, b, n, p0, p1, p2, p3)`: dst[i] = f(dst[i], a[i], b[i]).
// Built to PTX by build.rs for CUDA builds.

#define UPDATE(name, body)                                                           \
    extern "C" __global__ void name(float *dst, const float *a, const float *b,      \
                                    size_t n, float p0, float p1, float p2, float p3) { \
        for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;         \
             i += (size_t)blockDim.x * gridDim.x) {                                   \
            float d = dst[i];                                                         \
            const float x = a[i];                                                     \
            const float y = b[i];                                                     \
            body;                                                                     \
            dst[i] = d;                                                               \
        }                                                                             \
    }

// SGD without momentum: θ -= lr (g + wd θ); a = g (b unused). p0 lr, p1 wd.
UPDATE(cnn_sgd_plain, d -= p0 * (x + p1 * d))
// Momentum buffer: b = μ b + (1 - dampening) (g + wd θ); a = g, b = θ.
// p0 μ, p1 1 - dampening, p2 wd.
UPDATE(cnn_sgd_buffer, d = p0 * d + p1 * (x + p2 * y))
// θ -= lr · step, step = buf, or with Nesterov g + wd θ + μ buf; a = buf,
// b = g. p0 lr, p1 μ, p2 wd, p3 1 for Nesterov.
UPDATE(cnn_sgd_theta, {
    const float step = p3 != 0.0f ? y + p2 * d + p1 * x : x;
    d -= p0 * step;
})
// Adam's first moment: m = β1 m + (1 - β1)(g + l2 θ); a = g, b = θ. p0 β1, p1 l2.
UPDATE(cnn_adam_m, d = p0 * d + (1.0f - p0) * (x + p1 * y))
// Second moment: v = β2 v + (1 - β2) g'², g' = g + l2 θ; a = g, b = θ. p0 β2, p1 l2.
UPDATE(cnn_adam_v, {
    const float g = x + p1 * y;
    d = p0 * d + (1.0f - p0) * g * g;
})
// θ = θ · shrink - step_size · m / (√v / √bc2 + eps); a = m, b = v.
// p0 shrink, p1 step_size, p2 √bc2, p3 eps.
UPDATE(cnn_adam_theta, d = d * p0 - p1 * x / (sqrtf(y) / p2 + p3))
// An average of the weights: e = decay e + rest θ, unchanged where e == θ;
// a = θ (b unused). p0 decay, p1 rest.
UPDATE(cnn_ema, if (d != x) d = p0 * d + p1 * x)
