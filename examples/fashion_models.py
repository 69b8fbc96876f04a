"""The Fashion-MNIST models (MLP, CNN, LSTM/GRU/RNN classifier), written once for any nn
namespace with PyTorch's API: model_classes(ddl.nn) for the examples, model_classes(torch.nn)
for the benchmarks' PyTorch side. Imports neither library itself."""


def model_classes(nn):
    """(MLP, CNN, RNNClassifier) built on nn (ddl.nn or torch.nn)."""

    class MLP(nn.Module):
        def __init__(self, hidden=(512, 256), dropout=0.2):
            super().__init__()
            layers, width = [nn.Flatten()], 28 * 28
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
                width = h
            layers.append(nn.Linear(width, 10))
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)

    class CNN(nn.Module):
        """Two conv + batch norm + pooling blocks and a small classifier."""

        def __init__(self, channels=(32, 64), hidden=128, dropout=0.3):
            super().__init__()
            c1, c2 = channels
            self.features = nn.Sequential(
                nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    class RNNClassifier(nn.Module):
        """Reads the 28 rows of an image as a 28-step sequence; classifies the last state."""

        def __init__(self, cell="lstm", hidden=128, layers=1):
            super().__init__()
            rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
            self.rnn = rnn(28, hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, 10)

        def forward(self, x):
            out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
            return self.head(out[:, -1])

    for cls in (MLP, CNN, RNNClassifier):
        cls.__qualname__ = cls.__name__  # reprs and pickles name them as module-level classes
    return MLP, CNN, RNNClassifier


def build(classes, name, **kwargs):
    """The model called name ("mlp", "cnn", "lstm", "gru", "rnn") from model_classes(nn)."""
    mlp, cnn, rnn = classes
    if name == "mlp":
        return mlp(**kwargs)
    if name == "cnn":
        return cnn(**kwargs)
    if name in ("lstm", "gru", "rnn"):
        return rnn(name, **kwargs)
    raise ValueError(f"unknown model {name!r}")
