"""ddl.optim: optimizers and learning-rate schedulers, with PyTorch's names and formulas.

    opt = ddl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = ddl.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(90):
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()          # one fused C call per parameter group
        sched.step()

See docs/optim.md for each optimizer's update and its limits.
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .adaptive import Adadelta, Adagrad, Adamax, NAdam, RAdam
from .lbfgs import LBFGS
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["LBFGS", "SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam",
           "Optimizer", "RAdam", "RMSprop", "lr_scheduler"]
