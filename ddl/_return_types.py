"""The (values, indices) pair that max(dim), min(dim), sort, topk and cummax return."""


class ValuesIndices(tuple):
    """A 2-tuple with ``.values`` and ``.indices``, as torch.return_types' results."""

    __slots__ = ()

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]
