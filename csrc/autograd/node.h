/* node.h: the graph node and the recording helpers the differentiable ops share. */
#ifndef DDL_AUTOGRAD_NODE_H
#define DDL_AUTOGRAD_NODE_H

#include "core/internal.h"
#include "ddl/autograd.h"

#define DDL_NODE_MAX_INPUTS 8
#define DDL_NODE_MAX_SAVED 8

typedef struct ddl_node ddl_node;
typedef struct ddl_leaf_hook ddl_leaf_hook;

/* Compute d(input i) from dout for every i with need[i]; write new references to dinp[i].
 * The result must have input i's shape and dtype. dout is borrowed and never mutated. */
typedef ddl_status (*ddl_backward_fn)(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                      const int *need);

typedef struct {
    ddl_node *fn;     /* producer of a non-leaf input (retained), or NULL */
    ddl_tensor *leaf; /* a leaf input that requires grad (retained), or NULL */
    int ndim;
    int64_t shape[DDL_MAX_DIMS];
    ddl_dtype dtype;
} ddl_edge;

struct ddl_node {
    ddl_object base; /* refcount: held by the output tensor and by consumer nodes */
    const char *name;
    ddl_backward_fn backward;
    int n_inputs;
    ddl_edge in[DDL_NODE_MAX_INPUTS];
    ddl_tensor *saved[DDL_NODE_MAX_SAVED]; /* detached headers: no cycles through grad_fn */
    double dargs[4];
    int64_t iargs[2 * DDL_MAX_DIMS];
    int released; /* saved tensors freed after a backward without retain_graph */
    /* engine scratch, valid during one ddl_backward */
    uint64_t visit;
    int64_t deps;
    ddl_tensor *grad;
};

/* When grad mode is on and any input requires grad, make a node for `out` (which becomes
 * its grad_fn, and requires grad) and return it in *node; else *node = NULL. */
ddl_status ddl_node_record(ddl_node **node, ddl_tensor *out, const char *name,
                           ddl_backward_fn backward, int n, const ddl_tensor *const *inputs);
/* Save t (as a detached header) in slot i of node. */
ddl_status ddl_node_save(ddl_node *node, int i, const ddl_tensor *t);
void ddl_node_release(ddl_node *n);

/* A leaf's gradient-ready hook (ddl_tensor_set_hook), owned by the tensor. */
struct ddl_leaf_hook {
    ddl_object base;
    ddl_grad_hook_fn fn;
    void *ctx;
    void (*release)(void *ctx);
    int64_t pending; /* engine scratch: contributions still to come in this backward pass */
};

/* What a forward records: the node's name, backward and inputs (NULL for inputs without a
 * gradient), its integer and double arguments, and the tensors backward reads (saved[i],
 * NULL entries skipped); then the forward's temporaries, dropped once the node is made. */
typedef struct {
    const char *name;
    ddl_backward_fn backward;
    int n_inputs;
    const ddl_tensor *in[DDL_NODE_MAX_INPUTS];
    int64_t iargs[2 * DDL_MAX_DIMS];
    double dargs[4];
    const ddl_tensor *save[DDL_NODE_MAX_SAVED];
    ddl_tensor *drop[8];
} ddl_node_spec;

/* The end of every differentiable forward: when st is DDL_OK, record spec's node on o (if an
 * input requires grad) and hand o to *out; on any failure release o. Either way release
 * spec's temporaries. Returns the status. */
ddl_status ddl_node_finish(ddl_tensor **out, ddl_status st, ddl_tensor *o,
                           const ddl_node_spec *spec);

/* Sum g down to (ndim, shape) over the dims broadcasting expanded (a new reference). */
ddl_status ddl_sum_to_shape(ddl_tensor **out, const ddl_tensor *g, int ndim, const int64_t *shape);

/* Finish d(input) for edge e: sum g over the broadcast dims, cast to the input's dtype.
 * Steals g. */
ddl_status ddl_edge_grad(ddl_tensor **out, ddl_tensor *g, const ddl_edge *e);

/* Run `expr` with grad mode off on this thread. */
extern _Thread_local int ddl_grad_mode_off;

#endif
