/* optim_adaptive.c: fused in-place Adadelta / Adagrad / Adamax / NAdam / RAdam updates over a
 * parameter group (formulas and conventions: optim.h), float32 and float64. */
#include "optim/group.h"

/* ---- kernels, instantiated for float and double (T) --------------------------------------
 * As in optim.c: scalars arrive rounded to T and each line is one of PyTorch's tensor ops in
 * its order (addcmul: s + (v * a) * b; addcdiv: s + v * (a / b); add with alpha: s + alpha * b),
 * so float64 trajectories match PyTorch's to rounding. */

#define GRAD(T, g, p, i, wd, maximize)                                                             \
    T d = (maximize) ? -(g)[i] : (g)[i];                                                           \
    if ((wd) != 0) d = d + (wd) * (p)[i]

#define DEFINE_ADAPTIVE(T, SQRT, FABS)                                                             \
    static void adadelta_##T(T *restrict p, const T *restrict g, T *restrict sq, T *restrict acc,  \
                             int64_t N, T lr, T rho, T omr, T eps, T wd, int maximize) {           \
        for (int64_t i = 0; i < N; i++) {                                                          \
            GRAD(T, g, p, i, wd, maximize);                                                        \
            T s = sq[i] * rho + (omr * d) * d;                                                     \
            sq[i] = s;                                                                             \
            T delta = SQRT(acc[i] + eps) / SQRT(s + eps) * d;                                      \
            acc[i] = acc[i] * rho + (omr * delta) * delta;                                         \
            p[i] = p[i] + -lr * delta;                                                             \
        }                                                                                          \
    }                                                                                              \
    static void adagrad_##T(T *restrict p, const T *restrict g, T *restrict sum, int64_t N,        \
                            T neg_clr, T eps, T wd, int maximize) {                                \
        for (int64_t i = 0; i < N; i++) {                                                          \
            GRAD(T, g, p, i, wd, maximize);                                                        \
            T s = sum[i] + d * d;                                                                  \
            sum[i] = s;                                                                            \
            p[i] = p[i] + neg_clr * (d / (SQRT(s) + eps));                                         \
        }                                                                                          \
    }                                                                                              \
    static void adamax_##T(T *restrict p, const T *restrict g, T *restrict m, T *restrict u,       \
                           int64_t N, T w1, T w1c, int lerp_lo, T beta2, T eps, T wd, T neg_clr,   \
                           int maximize) {                                                         \
        for (int64_t i = 0; i < N; i++) {                                                          \
            GRAD(T, g, p, i, wd, maximize);                                                        \
            T mi = LERP(m[i], d, w1, w1c, lerp_lo);                                                \
            m[i] = mi;                                                                             \
            T a = u[i] * beta2, b = FABS(d) + eps;                                                 \
            T ui = (a != a || a > b) ? a : b; /* torch.maximum: NaN wins */                        \
            ui = b != b ? b : ui;                                                                  \
            u[i] = ui;                                                                             \
            p[i] = p[i] + neg_clr * (mi / ui);                                                     \
        }                                                                                          \
    }                                                                                              \
    /* decay: 1 - lr*wd for decoupled weight decay (else 1); wd: the L2 term (0 if decoupled) */   \
    static void nadam_##T(T *restrict p, const T *restrict g, T *restrict m, T *restrict v,        \
                          int64_t N, T decay, T wd, T w1, T w1c, int lerp_lo, T beta2, T omb2,     \
                          T bc2, T eps, T c_grad, T c_avg, int maximize) {                         \
        for (int64_t i = 0; i < N; i++) {                                                          \
            T pi = p[i] * decay;                                                                   \
            T d = maximize ? -g[i] : g[i];                                                         \
            if (wd != 0) d = d + wd * pi;                                                          \
            T mi = LERP(m[i], d, w1, w1c, lerp_lo);                                                \
            T vi = v[i] * beta2 + (omb2 * d) * d;                                                  \
            m[i] = mi;                                                                             \
            v[i] = vi;                                                                             \
            T denom = SQRT(vi / bc2) + eps;                                                        \
            pi = pi + c_grad * (d / denom);                                                        \
            p[i] = pi + c_avg * (mi / denom);                                                      \
        }                                                                                          \
    }                                                                                              \
    /* rect > 0: the rectified update with factor rect; else the plain momentum step */            \
    static void radam_##T(T *restrict p, const T *restrict g, T *restrict m, T *restrict v,        \
                          int64_t N, T decay, T wd, T w1, T w1c, int lerp_lo, T beta2, T omb2,     \
                          T bc1, T bc2s, T eps, T lr, T rect, int maximize) {                      \
        for (int64_t i = 0; i < N; i++) {                                                          \
            T pi = p[i] * decay;                                                                   \
            T d = maximize ? -g[i] : g[i];                                                         \
            if (wd != 0) d = d + wd * pi;                                                          \
            T mi = LERP(m[i], d, w1, w1c, lerp_lo);                                                \
            T vi = v[i] * beta2 + (omb2 * d) * d;                                                  \
            m[i] = mi;                                                                             \
            v[i] = vi;                                                                             \
            T upd = mi / bc1 * lr;                                                                 \
            if (rect > 0) upd = upd * (bc2s / (SQRT(vi) + eps)) * rect;                            \
            p[i] = pi + -upd;                                                                      \
        }                                                                                          \
    }
DEFINE_ADAPTIVE(float, sqrtf, fabsf)
DEFINE_ADAPTIVE(double, sqrt, fabs)

/* Check every parameter with a gradient against its k - 2 state arrays (given after params and
 * grads in `arrays`, named by `names`) and its step (and optional second scalar) tensors. */
static ddl_status check_all(const char *who, int n, ddl_tensor *const *params,
                            const ddl_tensor *const *grads, int k, ddl_tensor *const *const *arrays,
                            const char *const *names, ddl_tensor *const *steps,
                            ddl_tensor *const *scalars, const char *scalars_name) {
    DDL_TRY(check_group(who, n, params, grads));
    if (n > 0) {
        for (int j = 0; j < k; j++)
            if (arrays[j] == NULL) DDL_FAIL(DDL_E_VALUE, "%s: %s must not be NULL", who, names[j]);
        if (steps == NULL) DDL_FAIL(DDL_E_VALUE, "%s: steps must not be NULL", who);
        if (scalars_name && scalars == NULL)
            DDL_FAIL(DDL_E_VALUE, "%s: %s must not be NULL", who, scalars_name);
    }
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        member ms[6] = {{params[i], "params"}, {grads[i], "grads"}};
        for (int j = 0; j < k; j++) ms[2 + j] = (member){arrays[j][i], names[j]};
        DDL_TRY(check_members(who, i, ms, 2 + k));
        DDL_TRY(check_step(who, i, steps[i]));
        if (scalars_name) {
            const ddl_tensor *s = scalars[i];
            if (s == NULL || ddl_tensor_numel(s) != 1 ||
                (s->dtype != DDL_FLOAT32 && s->dtype != DDL_FLOAT64))
                DDL_FAIL(DDL_E_VALUE, "%s: %s[%d] must be a one-element float tensor", who,
                         scalars_name, i);
        }
    }
    return DDL_OK;
}

#define F32(p) ((p)->dtype == DDL_FLOAT32)
#define D(ts, i) ddl_tensor_data((ts)[i])

/* ---- Adadelta ------------------------------------------------------------------------------- */

ddl_status ddl_adadelta_step(int n, ddl_tensor *const *params, const ddl_tensor *const *grads,
                             ddl_tensor *const *square_avgs, ddl_tensor *const *acc_deltas,
                             ddl_tensor *const *steps, double lr, double rho, double eps,
                             double weight_decay, int maximize) {
    ddl_tensor *const *arrays[2] = {square_avgs, acc_deltas};
    static const char *const names[2] = {"square_avgs", "acc_deltas"};
    DDL_TRY(check_all("adadelta_step", n, params, grads, 2, arrays, names, steps, NULL, NULL));
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        ddl_tensor *p = params[i];
        int64_t N = ddl_tensor_numel(p);
        advance_step(steps[i]);
        if (F32(p))
            adadelta_float(D(params, i), D(grads, i), D(square_avgs, i), D(acc_deltas, i), N,
                           (float)lr, (float)rho, (float)(1.0 - rho), (float)eps,
                           (float)weight_decay, maximize);
        else
            adadelta_double(D(params, i), D(grads, i), D(square_avgs, i), D(acc_deltas, i), N, lr,
                            rho, 1.0 - rho, eps, weight_decay, maximize);
    }
    return DDL_OK;
}

/* ---- Adagrad -------------------------------------------------------------------------------- */

ddl_status ddl_adagrad_step(int n, ddl_tensor *const *params, const ddl_tensor *const *grads,
                            ddl_tensor *const *state_sums, ddl_tensor *const *steps, double lr,
                            double lr_decay, double weight_decay, double eps, int maximize) {
    ddl_tensor *const *arrays[1] = {state_sums};
    static const char *const names[1] = {"state_sums"};
    DDL_TRY(check_all("adagrad_step", n, params, grads, 1, arrays, names, steps, NULL, NULL));
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        ddl_tensor *p = params[i];
        int64_t N = ddl_tensor_numel(p);
        double step = advance_step(steps[i]);
        double neg_clr = -(lr / (1 + (step - 1) * lr_decay));
        if (F32(p))
            adagrad_float(D(params, i), D(grads, i), D(state_sums, i), N, (float)neg_clr,
                          (float)eps, (float)weight_decay, maximize);
        else
            adagrad_double(D(params, i), D(grads, i), D(state_sums, i), N, neg_clr, eps,
                           weight_decay, maximize);
    }
    return DDL_OK;
}

/* ---- Adamax --------------------------------------------------------------------------------- */

ddl_status ddl_adamax_step(int n, ddl_tensor *const *params, const ddl_tensor *const *grads,
                           ddl_tensor *const *exp_avgs, ddl_tensor *const *exp_infs,
                           ddl_tensor *const *steps, double lr, double beta1, double beta2,
                           double eps, double weight_decay, int maximize) {
    ddl_tensor *const *arrays[2] = {exp_avgs, exp_infs};
    static const char *const names[2] = {"exp_avgs", "exp_infs"};
    DDL_TRY(check_all("adamax_step", n, params, grads, 2, arrays, names, steps, NULL, NULL));
    double w1 = 1.0 - beta1;
    int lo = fabs(w1) < 0.5;
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        ddl_tensor *p = params[i];
        int64_t N = ddl_tensor_numel(p);
        double step = advance_step(steps[i]);
        double neg_clr = -(lr / (1 - pow(beta1, step)));
        if (F32(p))
            adamax_float(D(params, i), D(grads, i), D(exp_avgs, i), D(exp_infs, i), N, (float)w1,
                         1.0f - (float)w1, lo, (float)beta2, (float)eps, (float)weight_decay,
                         (float)neg_clr, maximize);
        else
            adamax_double(D(params, i), D(grads, i), D(exp_avgs, i), D(exp_infs, i), N, w1,
                          1.0 - w1, lo, beta2, eps, weight_decay, neg_clr, maximize);
    }
    return DDL_OK;
}

/* ---- NAdam ---------------------------------------------------------------------------------- */

ddl_status ddl_nadam_step(int n, ddl_tensor *const *params, const ddl_tensor *const *grads,
                          ddl_tensor *const *exp_avgs, ddl_tensor *const *exp_avg_sqs,
                          ddl_tensor *const *mu_products, ddl_tensor *const *steps, double lr,
                          double beta1, double beta2, double eps, double weight_decay,
                          double momentum_decay, int decoupled_weight_decay, int maximize) {
    ddl_tensor *const *arrays[2] = {exp_avgs, exp_avg_sqs};
    static const char *const names[2] = {"exp_avgs", "exp_avg_sqs"};
    DDL_TRY(check_all("nadam_step", n, params, grads, 2, arrays, names, steps, mu_products,
                      "mu_products"));
    double w1 = 1.0 - beta1, decay = 1.0, l2 = 0.0;
    if (weight_decay != 0) {
        if (decoupled_weight_decay)
            decay = 1.0 - lr * weight_decay;
        else
            l2 = weight_decay;
    }
    int lo = fabs(w1) < 0.5;
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        ddl_tensor *p = params[i];
        int64_t N = ddl_tensor_numel(p);
        double step = advance_step(steps[i]);
        double bc2 = 1 - pow(beta2, step);
        double mu = beta1 * (1.0 - 0.5 * pow(0.96, step * momentum_decay));
        double mu_next = beta1 * (1.0 - 0.5 * pow(0.96, (step + 1) * momentum_decay));
        ddl_tensor *mp = mu_products[i];
        void *mpd = ddl_tensor_data(mp);
        if (mp->dtype == DDL_FLOAT32) /* PyTorch: a float32 tensor times mu rounded to float */
            *(float *)mpd = *(float *)mpd * (float)mu;
        else
            *(double *)mpd = *(double *)mpd * mu;
        double prod = ddl_load_elem(mpd, mp->dtype), prod_next = prod * mu_next;
        double c_grad = -lr * (1.0 - mu) / (1.0 - prod);
        double c_avg = (-lr * mu_next) / (1.0 - prod_next);
        if (F32(p))
            nadam_float(D(params, i), D(grads, i), D(exp_avgs, i), D(exp_avg_sqs, i), N,
                        (float)decay, (float)l2, (float)w1, 1.0f - (float)w1, lo, (float)beta2,
                        (float)(1.0 - beta2), (float)bc2, (float)eps, (float)c_grad, (float)c_avg,
                        maximize);
        else
            nadam_double(D(params, i), D(grads, i), D(exp_avgs, i), D(exp_avg_sqs, i), N, decay, l2,
                         w1, 1.0 - w1, lo, beta2, 1.0 - beta2, bc2, eps, c_grad, c_avg, maximize);
    }
    return DDL_OK;
}

/* ---- RAdam ---------------------------------------------------------------------------------- */

ddl_status ddl_radam_step(int n, ddl_tensor *const *params, const ddl_tensor *const *grads,
                          ddl_tensor *const *exp_avgs, ddl_tensor *const *exp_avg_sqs,
                          ddl_tensor *const *steps, double lr, double beta1, double beta2,
                          double eps, double weight_decay, int decoupled_weight_decay,
                          int maximize) {
    ddl_tensor *const *arrays[2] = {exp_avgs, exp_avg_sqs};
    static const char *const names[2] = {"exp_avgs", "exp_avg_sqs"};
    DDL_TRY(check_all("radam_step", n, params, grads, 2, arrays, names, steps, NULL, NULL));
    double w1 = 1.0 - beta1, decay = 1.0, l2 = 0.0;
    if (weight_decay != 0) {
        if (decoupled_weight_decay)
            decay = 1.0 - lr * weight_decay;
        else
            l2 = weight_decay;
    }
    int lo = fabs(w1) < 0.5;
    double rho_inf = 2 / (1 - beta2) - 1;
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        ddl_tensor *p = params[i];
        int64_t N = ddl_tensor_numel(p);
        double step = advance_step(steps[i]);
        double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
        double rho_t = rho_inf - 2 * step * pow(beta2, step) / bc2;
        double rect = 0.0; /* 0: the unrectified step */
        if (rho_t > 5.0)
            rect = pow(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5);
        double bc2s = pow(bc2, 0.5);
        if (F32(p))
            radam_float(D(params, i), D(grads, i), D(exp_avgs, i), D(exp_avg_sqs, i), N,
                        (float)decay, (float)l2, (float)w1, 1.0f - (float)w1, lo, (float)beta2,
                        (float)(1.0 - beta2), (float)bc1, (float)bc2s, (float)eps, (float)lr,
                        (float)rect, maximize);
        else
            radam_double(D(params, i), D(grads, i), D(exp_avgs, i), D(exp_avg_sqs, i), N, decay, l2,
                         w1, 1.0 - w1, lo, beta2, 1.0 - beta2, bc1, bc2s, eps, lr, rect, maximize);
    }
    return DDL_OK;
}
