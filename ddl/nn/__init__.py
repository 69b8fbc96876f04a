"""ddl.nn: layers, losses and the Module system, with PyTorch's names."""
from . import functional, init  # noqa: F401
from .attention import MultiheadAttention  # noqa: F401
from .layers import (  # noqa: F401
    GELU,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    Identity,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2d,
    Mish,
    ReLU,
    RMSNorm,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    Upsample,
)
from .loss import (  # noqa: F401
    BCELoss,
    BCEWithLogitsLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MarginRankingLoss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential, StateDictError  # noqa: F401
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: F401
from .transformer import (  # noqa: F401
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)


def __getattr__(name):
    # ddl.nn.parallel imports ddl.distributed: load it on first use, keeping `import ddl` light
    if name in ("parallel", "SyncBatchNorm"):
        import importlib

        parallel = importlib.import_module(".parallel", __name__)
        return parallel if name == "parallel" else parallel.SyncBatchNorm
    raise AttributeError(f"module 'ddl.nn' has no attribute {name!r}")

try:  # clip_grad_norm_ and friends
    from . import utils  # noqa: F401
except ImportError:  # pragma: no cover - utils lands with the optimizers
    pass
