"""Train the LSTM on the real Fashion-MNIST in one process (see fashion_common.py).

    python examples/fashion_mnist_lstm.py [--epochs N] [--threads T] [--subset N]
"""
from fashion_common import main

if __name__ == "__main__":
    main("lstm")
