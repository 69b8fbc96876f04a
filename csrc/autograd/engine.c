/* engine.c: graph nodes, leaf hooks, grad mode, the backward engine, and the helpers every
 * differentiable op shares (recording a forward, finishing an input's gradient). */
#include "autograd/node.h"

#include <stdlib.h>

_Thread_local int ddl_grad_mode_off;

void ddl_set_grad_enabled(int enabled) { ddl_grad_mode_off = !enabled; }
int ddl_is_grad_enabled(void) { return !ddl_grad_mode_off; }

/* ---- nodes ------------------------------------------------------------------------------- */

static void node_free_saved(ddl_node *n) {
    for (int i = 0; i < DDL_NODE_MAX_SAVED; i++) {
        ddl_tensor_release(n->saved[i]);
        n->saved[i] = NULL;
    }
}

/* Frees a node whose last reference went, and every input node that loses its last one with
 * it: iterative over such chains, so a deep graph (an RNN unrolled over thousands of steps)
 * cannot overflow the C stack. */
static void node_destroy(ddl_object *self) {
    ddl_node *stack_small[64], **stack = stack_small;
    size_t top = 0, cap = 64;
    stack[top++] = (ddl_node *)self;
    while (top) {
        ddl_node *x = stack[--top];
        node_free_saved(x);
        ddl_tensor_release(x->grad);
        for (int i = 0; i < x->n_inputs; i++) {
            ddl_tensor_release(x->in[i].leaf);
            ddl_node *y = x->in[i].fn;
            if (!y || atomic_fetch_sub_explicit((_Atomic int64_t *)&y->base.refcount, 1,
                                                memory_order_acq_rel) != 1)
                continue;
            if (top == cap) {
                ddl_node **bigger = malloc(sizeof *bigger * cap * 2);
                if (!bigger) { /* cannot grow: destroy recursively instead (rare) */
                    node_destroy(&y->base);
                    continue;
                }
                memcpy(bigger, stack, sizeof *stack * top);
                if (stack != stack_small) free(stack);
                stack = bigger;
                cap *= 2;
            }
            stack[top++] = y;
        }
        free(x);
    }
    if (stack != stack_small) free(stack);
}

void ddl_node_release(ddl_node *n) { ddl_object_release(n ? &n->base : NULL); }

static int input_requires_grad(const ddl_tensor *t) { return t && t->requires_grad; }

ddl_status ddl_node_record(ddl_node **node, ddl_tensor *out, const char *name,
                           ddl_backward_fn backward, int n, const ddl_tensor *const *inputs) {
    *node = NULL;
    if (ddl_grad_mode_off) return DDL_OK;
    int any = 0;
    for (int i = 0; i < n; i++) any |= input_requires_grad(inputs[i]);
    if (!any) return DDL_OK;
    if (!ddl_dtype_is_float(out->dtype)) return DDL_OK; /* integer results carry no gradient */
    ddl_node *x = calloc(1, sizeof *x);
    if (!x) DDL_FAIL(DDL_E_NOMEM, "out of memory recording %s", name);
    x->base.refcount = 1;
    x->base.destroy = node_destroy;
    x->name = name;
    x->backward = backward;
    x->n_inputs = n;
    for (int i = 0; i < n; i++) {
        const ddl_tensor *t = inputs[i];
        if (!t) continue;
        x->in[i].ndim = t->ndim;
        memcpy(x->in[i].shape, t->shape, sizeof t->shape);
        x->in[i].dtype = t->dtype;
        if (!t->requires_grad) continue;
        if (t->grad_fn) {
            x->in[i].fn = t->grad_fn;
            atomic_fetch_add_explicit((_Atomic int64_t *)&t->grad_fn->base.refcount, 1,
                                      memory_order_relaxed);
        } else {
            x->in[i].leaf = (ddl_tensor *)t;
            ddl_tensor_retain((ddl_tensor *)t);
        }
    }
    ddl_node_release(out->grad_fn);
    out->grad_fn = x;
    out->requires_grad = 1;
    *node = x;
    return DDL_OK;
}

ddl_status ddl_node_save(ddl_node *node, int i, const ddl_tensor *t) {
    ddl_tensor *d;
    DDL_TRY(ddl_tensor_detach(&d, t));
    ddl_tensor_release(node->saved[i]);
    node->saved[i] = d;
    return DDL_OK;
}

/* ---- tensor-level autograd API -------------------------------------------------------------- */

ddl_status ddl_tensor_set_requires_grad(ddl_tensor *t, int requires_grad) {
    if (t->grad_fn && !requires_grad)
        DDL_FAIL(DDL_E_VALUE, "requires_grad can only be turned off on leaf tensors; use "
                              "detach() for a non-leaf");
    if (requires_grad && !ddl_dtype_is_float(t->dtype))
        DDL_FAIL(DDL_E_TYPE, "only floating-point tensors can require gradients, got %s",
                 ddl_dtype_name(t->dtype));
    t->requires_grad = requires_grad != 0;
    return DDL_OK;
}

ddl_status ddl_tensor_detach(ddl_tensor **out, const ddl_tensor *t) {
    return ddl_tensor_from_storage(out, t->storage, t->dtype, t->ndim, t->shape, t->strides,
                                   t->offset);
}

static void hook_destroy(ddl_object *self) {
    ddl_leaf_hook *h = (ddl_leaf_hook *)self;
    if (h->release) h->release(h->ctx);
    free(h);
}

ddl_status ddl_tensor_set_hook(ddl_tensor *t, ddl_grad_hook_fn fn, void *ctx,
                               void (*release)(void *ctx)) {
    ddl_leaf_hook *h = t->hook;
    if (!fn) {
        t->hook = NULL;
        ddl_object_release(h ? &h->base : NULL);
        return DDL_OK;
    }
    if (!h) {
        h = calloc(1, sizeof *h);
        if (!h) DDL_FAIL(DDL_E_NOMEM, "out of memory setting a gradient hook");
        h->base.refcount = 1;
        h->base.destroy = hook_destroy;
        t->hook = h;
    } else if (h->release && h->ctx != ctx) {
        h->release(h->ctx);
    }
    h->fn = fn;
    h->ctx = ctx;
    h->release = release;
    return DDL_OK;
}

ddl_grad_hook_fn ddl_tensor_get_hook(const ddl_tensor *t, void **ctx) {
    if (ctx) *ctx = t->hook ? t->hook->ctx : NULL;
    return t->hook ? t->hook->fn : NULL;
}

const char *ddl_tensor_grad_fn_name(const ddl_tensor *t) {
    return t->grad_fn ? t->grad_fn->name : NULL;
}

/* ---- the engine ------------------------------------------------------------------------- */

typedef struct {
    ddl_node **items;
    size_t n, cap;
} node_vec;

static ddl_status vec_push(node_vec *v, ddl_node *x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        ddl_node **p = realloc(v->items, cap * sizeof *p);
        if (!p) DDL_FAIL(DDL_E_NOMEM, "backward: out of memory walking the graph");
        v->items = p;
        v->cap = cap;
    }
    v->items[v->n++] = x;
    return DDL_OK;
}

static _Atomic uint64_t visit_epoch;

/* Count, for every node reachable from root, how many reachable consumers feed it, and for
 * every leaf how many contributions it will receive. */
static ddl_status count_dependencies(ddl_node *root, uint64_t epoch, node_vec *all) {
    node_vec stack = {0};
    ddl_status st = vec_push(&stack, root);
    root->visit = epoch;
    root->deps = 0;
    while (!st && stack.n) {
        ddl_node *x = stack.items[--stack.n];
        if ((st = vec_push(all, x))) break;
        if (x->released) {
            st = ddl_fail(DDL_E_VALUE,
                          "backward through %s a second time: its saved tensors were freed by "
                          "the first backward; pass retain_graph=True to the first one",
                          x->name);
            break;
        }
        for (int i = 0; i < x->n_inputs; i++) {
            ddl_node *y = x->in[i].fn;
            if (x->in[i].leaf && x->in[i].leaf->hook) x->in[i].leaf->hook->pending = 0;
            if (!y) continue;
            if (y->visit != epoch) {
                y->visit = epoch;
                y->deps = 0;
                if ((st = vec_push(&stack, y))) break;
            }
            y->deps++;
        }
    }
    for (size_t k = 0; !st && k < all->n; k++) {
        ddl_node *x = all->items[k];
        for (int i = 0; i < x->n_inputs; i++)
            if (x->in[i].leaf && x->in[i].leaf->hook) x->in[i].leaf->hook->pending++;
    }
    free(stack.items);
    return st;
}

/* acc = acc + g for a non-leaf's pending gradient (out of place: g may be shared). */
static ddl_status accumulate_node(ddl_node *y, ddl_tensor *g) {
    if (!y->grad) {
        ddl_tensor_retain(g);
        y->grad = g;
        return DDL_OK;
    }
    ddl_tensor *sum;
    DDL_TRY(ddl_binary(&sum, DDL_OP_ADD, y->grad, g));
    ddl_tensor_release(y->grad);
    y->grad = sum;
    return DDL_OK;
}

/* leaf.grad += g (in place after the first pass, as PyTorch), then its hook when final. */
static ddl_status accumulate_leaf(ddl_tensor *leaf, ddl_tensor *g) {
    if (!leaf->grad) {
        /* the engine's exclusively owned result (nobody else holds its header or storage)
         * becomes .grad as it is; anything shared gets a private contiguous copy */
        if (g->refcount == 1 && g->storage->refcount == 1 && g->dtype == leaf->dtype &&
            ddl_tensor_is_contiguous(g) && g->ndim == leaf->ndim &&
            !memcmp(g->shape, leaf->shape, sizeof(int64_t) * (size_t)g->ndim)) {
            ddl_tensor_retain(g);
            leaf->grad = g;
        } else {
            ddl_tensor *own;
            DDL_TRY(ddl_tensor_to(&own, g, leaf->dtype));
            leaf->grad = own;
        }
    } else {
        DDL_TRY(ddl_binary_(leaf->grad, DDL_OP_ADD, g));
    }
    ddl_leaf_hook *h = leaf->hook;
    if (h && --h->pending == 0) return h->fn(leaf, h->ctx);
    return DDL_OK;
}

ddl_status ddl_backward(ddl_tensor *root, const ddl_tensor *grad, int retain_graph) {
    if (!root->requires_grad)
        DDL_FAIL(DDL_E_VALUE, "backward: the tensor does not require grad and has no grad_fn");
    ddl_tensor *g0;
    if (grad) {
        if (grad->ndim != root->ndim ||
            memcmp(grad->shape, root->shape, sizeof(int64_t) * (size_t)root->ndim)) {
            char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
            DDL_FAIL(DDL_E_VALUE, "backward: gradient of shape %s for a tensor of shape %s",
                     ddl_shape_str(b1, sizeof b1, grad->ndim, grad->shape),
                     ddl_shape_str(b2, sizeof b2, root->ndim, root->shape));
        }
        DDL_TRY(ddl_tensor_to(&g0, grad, root->dtype));
    } else {
        if (ddl_tensor_numel(root) != 1) {
            char b1[DDL_SHAPE_BUF];
            DDL_FAIL(DDL_E_VALUE,
                     "backward: grad can be implicitly created only for one-element outputs; "
                     "this one has shape %s: pass a gradient",
                     ddl_shape_str(b1, sizeof b1, root->ndim, root->shape));
        }
        DDL_TRY(ddl_tensor_full(&g0, root->dtype, root->ndim, root->shape, 1.0));
    }
    int saved_mode = ddl_grad_mode_off;
    ddl_grad_mode_off = 1; /* backward computations are not recorded */
    ddl_status st = DDL_OK;
    if (!root->grad_fn) { /* a leaf: its gradient is the seed itself */
        if (root->hook) root->hook->pending = 1;
        st = accumulate_leaf(root, g0);
        ddl_tensor_release(g0);
        ddl_grad_mode_off = saved_mode;
        return st;
    }
    node_vec all = {0}, ready = {0};
    uint64_t epoch = atomic_fetch_add(&visit_epoch, 1) + 1;
    ddl_node *rootfn = root->grad_fn;
    st = count_dependencies(rootfn, epoch, &all);
    if (!st) {
        rootfn->grad = g0;
        g0 = NULL;
        st = vec_push(&ready, rootfn);
    }
    /* a node runs once every consumer has handed it its gradient; a LIFO of ready nodes walks
     * depth first, so leaves near the loss finish (and fire their hooks) early */
    while (!st && ready.n) {
        ddl_node *x = ready.items[--ready.n];
        ddl_tensor *dout = x->grad, *dinp[DDL_NODE_MAX_INPUTS] = {0};
        int need[DDL_NODE_MAX_INPUTS] = {0};
        x->grad = NULL;
        for (int i = 0; i < x->n_inputs; i++) need[i] = x->in[i].fn || x->in[i].leaf;
        st = x->backward(x, dout, dinp, need);
        for (int i = 0; !st && i < x->n_inputs; i++) {
            if (!need[i]) continue;
            if (!dinp[i]) {
                st = ddl_fail(DDL_E_INTERNAL, "%s gave no gradient for input %d", x->name, i);
                break;
            }
            if (x->in[i].leaf) {
                st = accumulate_leaf(x->in[i].leaf, dinp[i]);
            } else {
                ddl_node *y = x->in[i].fn;
                st = accumulate_node(y, dinp[i]);
                if (!st && --y->deps == 0) st = vec_push(&ready, y);
            }
        }
        for (int i = 0; i < x->n_inputs; i++) ddl_tensor_release(dinp[i]);
        ddl_tensor_release(dout);
        if (!retain_graph) {
            node_free_saved(x);
            x->released = 1;
        }
    }
    /* on error, drop the partial gradients still waiting in nodes */
    for (size_t k = 0; k < all.n; k++) {
        ddl_tensor_release(all.items[k]->grad);
        all.items[k]->grad = NULL;
    }
    ddl_tensor_release(g0);
    free(all.items);
    free(ready.items);
    ddl_grad_mode_off = saved_mode;
    return st;
}

/* ---- shared backward helpers ----------------------------------------------------------- */

ddl_status ddl_sum_to_shape(ddl_tensor **out, const ddl_tensor *g, int ndim, const int64_t *shape) {
    int dims[DDL_MAX_DIMS], nd = 0, lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) dims[nd++] = d;
    if (nd == 0) {
        ddl_tensor_retain((ddl_tensor *)g);
        *out = (ddl_tensor *)g;
        return DDL_OK;
    }
    ddl_tensor *s;
    DDL_TRY(ddl_reduce(&s, DDL_REDUCE_SUM, g, nd, dims, 1, 0));
    ddl_status st = ddl_tensor_reshape(out, s, ndim, shape);
    ddl_tensor_release(s);
    return st;
}

ddl_status ddl_edge_grad(ddl_tensor **out, ddl_tensor *g, const ddl_edge *e) {
    ddl_tensor *s = NULL;
    ddl_status st = ddl_sum_to_shape(&s, g, e->ndim, e->shape);
    ddl_tensor_release(g);
    if (st) return st;
    if (s->dtype == e->dtype) {
        *out = s;
        return DDL_OK;
    }
    st = ddl_tensor_to(out, s, e->dtype);
    ddl_tensor_release(s);
    return st;
}

ddl_status ddl_node_finish(ddl_tensor **out, ddl_status st, ddl_tensor *o,
                           const ddl_node_spec *spec) {
    ddl_node *n = NULL;
    if (!st) st = ddl_node_record(&n, o, spec->name, spec->backward, spec->n_inputs, spec->in);
    if (!st && n) {
        memcpy(n->iargs, spec->iargs, sizeof n->iargs);
        memcpy(n->dargs, spec->dargs, sizeof n->dargs);
        for (int i = 0; i < DDL_NODE_MAX_SAVED && !st; i++)
            if (spec->save[i]) st = ddl_node_save(n, i, spec->save[i]);
    }
    for (int i = 0; i < 8; i++) ddl_tensor_release(spec->drop[i]);
    if (st)
        ddl_tensor_release(o);
    else
        *out = o;
    return st;
}

int64_t ddl_graph_leaves(const ddl_tensor *root, const ddl_tensor **out, int64_t cap) {
    if (!root->grad_fn) {
        if (root->requires_grad && cap > 0) out[0] = root;
        return root->requires_grad ? 1 : 0;
    }
    node_vec stack = {0}, all = {0};
    uint64_t epoch = atomic_fetch_add(&visit_epoch, 1) + 1;
    int64_t n = 0;
    if (vec_push(&stack, root->grad_fn)) return -1;
    root->grad_fn->visit = epoch;
    while (stack.n) {
        ddl_node *x = stack.items[--stack.n];
        for (int i = 0; i < x->n_inputs; i++) {
            if (x->in[i].leaf) {
                if (n < cap) out[n] = x->in[i].leaf;
                n++;
            }
            ddl_node *y = x->in[i].fn;
            if (y && y->visit != epoch) {
                y->visit = epoch;
                if (vec_push(&stack, y)) {
                    free(stack.items);
                    return -1;
                }
            }
        }
    }
    free(stack.items);
    free(all.items);
    return n;
}
