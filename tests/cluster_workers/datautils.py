"""The DDP tutorial series' datautils.py with torch replaced by ddl."""
import ddl
from ddl.data import Dataset


class MyTrainDataset(Dataset):
    def __init__(self, size):
        self.size = size
        self.data = [(ddl.rand(20), ddl.rand(1)) for _ in range(size)]

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return self.data[index]
