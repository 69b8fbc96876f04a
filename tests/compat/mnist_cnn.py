"""pytorch/examples' mnist/main.py (the CNN), as written for PyTorch, on Fashion-MNIST (the
dataset installed here); additions: init_weights, a step cap, the losses reported. The
example's Adadelta is swapped for SGD with momentum (Adadelta is the layers issue's), and
COMPAT_DROPOUT=0 turns dropout off for the step-by-step comparison with PyTorch (the two
libraries draw different dropout masks)."""
import os

import torch
import torch.nn.functional as F
from common import init_weights, report, steps
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR
from torchvision import datasets, transforms

P = float(os.environ.get("COMPAT_DROPOUT", "1"))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25 * P)
        self.dropout2 = nn.Dropout(0.5 * P)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(args, model, device, train_loader, optimizer, epoch, losses):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        if batch_idx >= steps():
            break
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if batch_idx % args["log_interval"] == 0:
            done = 100. * batch_idx / len(train_loader)
            print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} "
                  f"({done:.0f}%)]\tLoss: {loss.item():.6f}")


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    seen = 0
    with torch.no_grad():
        for i, (data, target) in enumerate(test_loader):
            if i >= 4:
                break
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
            seen += len(data)
    test_loss /= seen
    print(f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{seen} "
          f"({100. * correct / seen:.0f}%)\n")
    return test_loss


def main():
    torch.manual_seed(1)
    use_accel = torch.accelerator.is_available()
    device = torch.accelerator.current_accelerator() if use_accel else torch.device("cpu")
    train_kwargs = {"batch_size": 64}
    test_kwargs = {"batch_size": 1000}
    if use_accel:
        accel_kwargs = {"num_workers": 1, "pin_memory": True, "shuffle": True}
        train_kwargs.update(accel_kwargs)
        test_kwargs.update(accel_kwargs)
    workers = int(os.environ.get("COMPAT_WORKERS", "0"))
    if workers:
        train_kwargs.update({"num_workers": workers, "pin_memory": True,
                             "persistent_workers": True})
    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,))
    ])
    dataset1 = datasets.FashionMNIST("../data", train=True, download=True, transform=transform)
    dataset2 = datasets.FashionMNIST("../data", train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
    test_loader = torch.utils.data.DataLoader(dataset2, **test_kwargs)

    model = Net().to(device)
    init_weights(model)
    optimizer = optim.SGD(model.parameters(), lr=0.02, momentum=0.5)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    losses = []
    for epoch in range(1, 2):
        train({"log_interval": 5}, model, device, train_loader, optimizer, epoch, losses)
        test_loss = test(model, device, test_loader)
        scheduler.step()
    torch.save(model.state_dict(), "mnist_cnn.pt")
    report(losses=losses, test_loss=test_loss)


if __name__ == "__main__":
    main()
