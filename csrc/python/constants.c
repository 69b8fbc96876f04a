/* constants.c: the enum values of the C API that Python passes back in, exported as module
 * constants (_C.<name> is DDL_<name>): one table, so that no Python file copies a value. */
#include "pyddl.h"

#define K(name)                                                                                    \
    { #name, DDL_##name }

static const struct {
    const char *name;
    long value;
} constants[] = {
    /* core.h: dtypes (ddl_dtype), sizes */
    K(FLOAT32),
    K(FLOAT64),
    K(INT64),
    K(BOOL),
    K(INT32),
    K(INT16),
    K(INT8),
    K(UINT8),
    K(FLOAT16),
    K(BFLOAT16),
    K(NUM_DTYPES),
    K(MAX_DIMS),
    K(ALL),
    /* core.h: ddl_binary_op */
    K(OP_ADD),
    K(OP_SUB),
    K(OP_MUL),
    K(OP_DIV),
    K(OP_POW),
    K(OP_MAXIMUM),
    K(OP_MINIMUM),
    K(OP_EQ),
    K(OP_NE),
    K(OP_LT),
    K(OP_LE),
    K(OP_GT),
    K(OP_GE),
    K(NUM_BINARY_OPS),
    /* core.h: ddl_unary_op */
    K(OP_NEG),
    K(OP_EXP),
    K(OP_LOG),
    K(OP_SQRT),
    K(OP_ABS),
    K(OP_TANH),
    K(OP_SIGMOID),
    K(OP_RELU),
    K(OP_SIGN),
    K(OP_SIN),
    K(OP_COS),
    K(NUM_UNARY_OPS),
    /* core.h: ddl_reduce_op */
    K(REDUCE_SUM),
    K(REDUCE_MEAN),
    K(REDUCE_MAX),
    K(REDUCE_MIN),
    K(REDUCE_ARGMAX),
    K(REDUCE_ARGMIN),
    K(REDUCE_VAR),
    K(REDUCE_STD),
    K(REDUCE_PROD),
    K(NUM_REDUCE_OPS),
    /* autograd.h: ddl_shape_op, ddl_pool_kind, ddl_class_loss_kind, ddl_pair_loss_kind,
     * ddl_act_kind, ddl_cell_kind */
    K(SHAPE_VIEW),
    K(SHAPE_RESHAPE),
    K(SHAPE_EXPAND),
    K(POOL_MAX),
    K(POOL_AVG),
    K(POOL_ADAPTIVE_AVG),
    K(CLASS_LOSS_CROSS_ENTROPY),
    K(CLASS_LOSS_NLL),
    K(PAIR_LOSS_BCE_WITH_LOGITS),
    K(PAIR_LOSS_MSE),
    K(PAIR_LOSS_L1),
    K(ACT_LEAKY_RELU),
    K(ACT_GELU),
    K(CELL_RNN),
    K(CELL_LSTM),
    K(CELL_GRU),
    /* nn_loss.h, nn_act.h, nn_rnn.h: ddl_reduction, ddl_gelu_approximate, ddl_rnn_nonlinearity */
    K(REDUCTION_NONE),
    K(REDUCTION_MEAN),
    K(REDUCTION_SUM),
    K(GELU_NONE),
    K(GELU_TANH),
    K(RNN_TANH),
    K(RNN_RELU),
    /* comm.h: ddl_comm_op */
    K(COMM_SUM),
    K(COMM_AVG),
    K(COMM_MIN),
    K(COMM_MAX),
    K(COMM_PRODUCT),
    K(COMM_NUM_OPS),
};

int pyddl_add_constants(PyObject *m) {
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++)
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) return -1;
    return 0;
}
