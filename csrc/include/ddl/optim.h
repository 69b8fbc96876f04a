/* optim.h: fused in-place optimizer updates (SGD, Adam/AdamW, RMSprop, Adadelta, Adagrad,
 * Adamax, NAdam, RAdam) and the gradient-norm
 * helpers behind clip_grad_norm_, each over a whole parameter group in one call.
 *
 * Conventions
 * -----------
 * Every function takes `n` parallel arrays of borrowed tensors, entry i of each belonging to
 * parameter i. Parameters and their state buffers are updated in place.
 *
 *  - A NULL `grads[i]` means "skip parameter i": neither it nor its state is read or written,
 *    and its step count is not advanced (PyTorch skips parameters whose .grad is None). Its
 *    other entries may then be NULL too.
 *  - For every parameter with a gradient, the parameter, its gradient and each state buffer
 *    the options use must be contiguous, of one float dtype (float32 or float64) and one shape,
 *    and must not share memory with each other. The math runs in that dtype, as PyTorch does;
 *    scalar coefficients (bias corrections, step sizes) are computed in double first.
 *  - `steps[i]` is a one-element float32, float64 or int64 tensor (PyTorch keeps a float32
 *    0-d tensor): the call adds 1 to it, then uses the new count.
 *  - Everything is validated before anything is written: on error no tensor has changed.
 *    Errors: DDL_E_TYPE for a non-float parameter or a dtype mismatch, DDL_E_VALUE for a shape
 *    mismatch, a non-contiguous tensor, overlapping memory or a missing state buffer; the
 *    message names the array and the index ("exp_avg_sqs[2] has shape (3,) but params[2] has
 *    shape (3, 4)").
 *
 * The hyperparameters are not range-checked here (ddl.optim checks them, with PyTorch's
 * messages); the formulas are PyTorch's torch.optim single-tensor implementations, term by term,
 * so a trajectory matches PyTorch's to rounding.
 *
 * Example: one SGD step with momentum over two parameters, the second without a gradient
 *
 *     ddl_tensor *params[2] = {w, b}, *bufs[2] = {w_buf, NULL};
 *     const ddl_tensor *grads[2] = {w->grad, NULL};
 *     int first[2] = {1, 0};
 *     if (ddl_sgd_step(2, params, grads, bufs, first, 0.1, 0.9, 0.0, 0.0, 0, 0))
 *         fprintf(stderr, "ddl: %s\n", ddl_last_error());
 */
#ifndef DDL_OPTIM_H
#define DDL_OPTIM_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SGD with momentum, dampening, Nesterov momentum and L2 weight decay (torch.optim.SGD):
 *
 *     g = maximize ? -grad : grad
 *     if weight_decay != 0:  g = g + weight_decay * p
 *     if momentum != 0:
 *         buf = first_step ? g : momentum * buf + (1 - dampening) * g
 *         g   = nesterov ? g + momentum * buf : buf
 *     p = p - lr * g
 *
 * `momentum_bufs` and `first_step` are read only when momentum != 0 (they may be NULL
 * otherwise). first_step[i] != 0 says momentum_bufs[i] is new: it is set to g, not decayed
 * (its old contents are ignored, so it may be uninitialized). */
ddl_status ddl_sgd_step(int n,
                        ddl_tensor *const *params,        // (n,) each (*)
                        const ddl_tensor *const *grads,   // (n,) each (*) or NULL
                        ddl_tensor *const *momentum_bufs, // (n,) each (*), or NULL
                        const int *first_step,            // (n,), or NULL
                        double lr, double momentum, double dampening, double weight_decay,
                        int nesterov, int maximize);

/* Adam and AdamW, with optional AMSGrad (torch.optim.Adam / AdamW):
 *
 *     g = maximize ? -grad : grad
 *     step += 1
 *     if weight_decay != 0:
 *         decoupled (AdamW):  p = p * (1 - lr * weight_decay)
 *         else (Adam, L2):    g = g + weight_decay * p
 *     m = lerp(m, g, 1 - beta1)                    (m + (1 - beta1) * (g - m))
 *     v = beta2 * v + (1 - beta2) * g * g
 *     vmax = max(vmax, v)                          (amsgrad only; NaN propagates)
 *     denom = sqrt(amsgrad ? vmax : v) / sqrt(1 - beta2^step) + eps
 *     p = p - lr / (1 - beta1^step) * m / denom
 *
 * `max_exp_avg_sqs` is read only with amsgrad (NULL otherwise). */
ddl_status ddl_adam_step(int n,
                         ddl_tensor *const *params,          // (n,) each (*)
                         const ddl_tensor *const *grads,     // (n,) each (*) or NULL
                         ddl_tensor *const *exp_avgs,        // (n,) each (*): m
                         ddl_tensor *const *exp_avg_sqs,     // (n,) each (*): v
                         ddl_tensor *const *max_exp_avg_sqs, // (n,) each (*): vmax, or NULL
                         ddl_tensor *const *steps,           // (n,) each one element
                         double lr, double beta1, double beta2, double eps, double weight_decay,
                         int amsgrad, int decoupled_weight_decay, int maximize);

/* RMSprop, optionally centered and with momentum (torch.optim.RMSprop):
 *
 *     g = maximize ? -grad : grad
 *     step += 1
 *     if weight_decay != 0:  g = g + weight_decay * p
 *     sq = alpha * sq + (1 - alpha) * g * g
 *     if centered:  ga = lerp(ga, g, 1 - alpha);  avg = sqrt(sq - ga * ga) + eps
 *     else:         avg = sqrt(sq) + eps
 *     if momentum > 0:  buf = momentum * buf + g / avg;  p = p - lr * buf
 *     else:             p = p - lr * g / avg
 *
 * `momentum_bufs` is read only when momentum > 0, `grad_avgs` only when centered (NULL
 * otherwise). The step count is kept for checkpoints; the update does not use it. */
ddl_status ddl_rmsprop_step(int n,
                            ddl_tensor *const *params,        // (n,) each (*)
                            const ddl_tensor *const *grads,   // (n,) each (*) or NULL
                            ddl_tensor *const *square_avgs,   // (n,) each (*): sq
                            ddl_tensor *const *momentum_bufs, // (n,) each (*): buf, or NULL
                            ddl_tensor *const *grad_avgs,     // (n,) each (*): ga, or NULL
                            ddl_tensor *const *steps,         // (n,) each one element
                            double lr, double alpha, double eps, double weight_decay,
                            double momentum, int centered, int maximize);

/* *out = the norm_type-norm of all elements of all grads taken together, as if concatenated
 * (what clip_grad_norm_ computes): norm_type > 0 finite gives (sum |x|^p)^(1/p) (2: the
 * Euclidean norm), +INFINITY gives max |x|. Accumulates in double; a NaN element gives NaN.
 * NULL entries are skipped; no gradients (or only empty ones) give 0. grads must be contiguous
 * float32/float64 (dtypes may differ between entries). Other norm_type values: DDL_E_VALUE. */
ddl_status ddl_grad_norm(double *out, int n,
                         const ddl_tensor *const *grads, // (n,) each (*) or NULL
                         double norm_type);

/* ts[i] *= factor in place, for every non-NULL entry (contiguous float32/float64; the factor is
 * rounded to each tensor's dtype first, as PyTorch's mul_ by a 0-d tensor does). */
ddl_status ddl_scale_(int n,
                      ddl_tensor *const *ts, // (n,) each (*) or NULL
                      double factor);

/* ---- the adaptive optimizers of optim_adaptive.c (same conventions) -------------------------- */

/* Adadelta (torch.optim.Adadelta):
 *
 *     g = maximize ? -grad : grad;  step += 1
 *     if weight_decay != 0:  g = g + weight_decay * p
 *     sq = rho * sq + (1 - rho) * g * g
 *     delta = sqrt(acc + eps) / sqrt(sq + eps) * g
 *     acc = rho * acc + (1 - rho) * delta * delta
 *     p = p - lr * delta */
ddl_status ddl_adadelta_step(int n,
                             ddl_tensor *const *params,      // (n,) each (*)
                             const ddl_tensor *const *grads, // (n,) each (*) or NULL
                             ddl_tensor *const *square_avgs, // (n,) each (*): sq
                             ddl_tensor *const *acc_deltas,  // (n,) each (*): acc
                             ddl_tensor *const *steps,       // (n,) each one element
                             double lr, double rho, double eps, double weight_decay, int maximize);

/* Adagrad (torch.optim.Adagrad; dense gradients):
 *
 *     g = maximize ? -grad : grad;  step += 1
 *     if weight_decay != 0:  g = g + weight_decay * p
 *     sum = sum + g * g
 *     p = p - lr / (1 + (step - 1) * lr_decay) * g / (sqrt(sum) + eps) */
ddl_status ddl_adagrad_step(int n,
                            ddl_tensor *const *params,      // (n,) each (*)
                            const ddl_tensor *const *grads, // (n,) each (*) or NULL
                            ddl_tensor *const *state_sums,  // (n,) each (*): sum
                            ddl_tensor *const *steps,       // (n,) each one element
                            double lr, double lr_decay, double weight_decay, double eps,
                            int maximize);

/* Adamax (torch.optim.Adamax):
 *
 *     g = maximize ? -grad : grad;  step += 1
 *     if weight_decay != 0:  g = g + weight_decay * p
 *     m = lerp(m, g, 1 - beta1)
 *     u = max(beta2 * u, |g| + eps)                 (NaN propagates)
 *     p = p - lr / (1 - beta1^step) * m / u */
ddl_status ddl_adamax_step(int n,
                           ddl_tensor *const *params,      // (n,) each (*)
                           const ddl_tensor *const *grads, // (n,) each (*) or NULL
                           ddl_tensor *const *exp_avgs,    // (n,) each (*): m
                           ddl_tensor *const *exp_infs,    // (n,) each (*): u
                           ddl_tensor *const *steps,       // (n,) each one element
                           double lr, double beta1, double beta2, double eps, double weight_decay,
                           int maximize);

/* NAdam (torch.optim.NAdam), with mu_t = beta1 (1 - 0.5 * 0.96^(step * momentum_decay)):
 *
 *     g = maximize ? -grad : grad;  step += 1
 *     if weight_decay != 0:  decoupled: p = p * (1 - lr * weight_decay);  else g = g + wd * p
 *     mu_product = mu_product * mu_t                (in mu_product's own dtype, as PyTorch)
 *     m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
 *     denom = sqrt(v / (1 - beta2^step)) + eps
 *     p = p - lr (1 - mu_t) / (1 - mu_product) * g / denom
 *     p = p - lr mu_{t+1} / (1 - mu_product * mu_{t+1}) * m / denom
 * `mu_products[i]` is a one-element float tensor like steps[i]. */
ddl_status ddl_nadam_step(int n,
                          ddl_tensor *const *params,      // (n,) each (*)
                          const ddl_tensor *const *grads, // (n,) each (*) or NULL
                          ddl_tensor *const *exp_avgs,    // (n,) each (*): m
                          ddl_tensor *const *exp_avg_sqs, // (n,) each (*): v
                          ddl_tensor *const *mu_products, // (n,) each one element
                          ddl_tensor *const *steps,       // (n,) each one element
                          double lr, double beta1, double beta2, double eps, double weight_decay,
                          double momentum_decay, int decoupled_weight_decay, int maximize);

/* RAdam (torch.optim.RAdam), rho_inf = 2 / (1 - beta2) - 1,
 * rho_t = rho_inf - 2 step beta2^step / (1 - beta2^step):
 *
 *     g = maximize ? -grad : grad;  step += 1
 *     if weight_decay != 0:  decoupled: p = p * (1 - lr * weight_decay);  else g = g + wd * p
 *     m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
 *     mh = m / (1 - beta1^step)
 *     rho_t > 5:  p = p - mh * lr * sqrt(1 - beta2^step) / (sqrt(v) + eps) * rect_t
 *     otherwise:  p = p - mh * lr
 * with rect_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)). */
ddl_status ddl_radam_step(int n,
                          ddl_tensor *const *params,      // (n,) each (*)
                          const ddl_tensor *const *grads, // (n,) each (*) or NULL
                          ddl_tensor *const *exp_avgs,    // (n,) each (*): m
                          ddl_tensor *const *exp_avg_sqs, // (n,) each (*): v
                          ddl_tensor *const *steps,       // (n,) each one element
                          double lr, double beta1, double beta2, double eps, double weight_decay,
                          int decoupled_weight_decay, int maximize);

#ifdef __cplusplus
}
#endif
#endif /* DDL_OPTIM_H */
