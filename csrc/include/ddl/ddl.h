/* ddl.h: the whole public C API of ddl, one include for programs that use all of it.
 *
 * The headers it gathers are the layers of the C core, lowest first; each includes only the
 * ones before it (docs/architecture.md draws the picture, scripts/check_layers.py enforces it):
 *
 *   core.h       errors, dtypes, storage, tensors, elementwise/reduce/matmul ops, RNG, threads
 *   nn_*.h       layer kernels: activations, conv/pool, losses, norms, RNN cells (forward and
 *                backward pairs on raw float32 buffers)
 *   autograd.h   define-by-run autograd and the differentiable ops (ddl_ag_*)
 *   optim.h      fused optimizer steps over parameter lists
 *   data.h       IDX and libsvm parsers, batch assembly
 *   ml.h         hashing trick, logistic-regression loss and gradient
 *   store.h      rendezvous key-value stores (TCP, file, prefix, Redis)
 *   comm.h       process groups and collectives (Gloo)
 *   reducer.h    the DDP gradient reducer (buckets overlapped with backward)
 *
 * Start with core.h: its opening comment shows a first program.
 */
#ifndef DDL_H
#define DDL_H

#include "autograd.h"
#include "comm.h"
#include "core.h"
#include "data.h"
#include "fixed_point.h"
#include "half.h"
#include "ml.h"
#include "nn_act.h"
#include "nn_attention.h"
#include "nn_conv.h"
#include "nn_layer_norm.h"
#include "nn_loss.h"
#include "nn_norm.h"
#include "nn_rnn.h"
#include "optim.h"
#include "reducer.h"
#include "store.h"

#endif /* DDL_H */
