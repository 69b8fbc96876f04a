"""A minimal Future with torch.futures.Future's methods (wait, value, then, done, set_result,
set_exception), for DDP communication hooks. A Future made from an async collective's Work
completes when waited on; `then` chains a callback that runs on the finished future."""


class Future:
    def __init__(self, wait=None):
        self._wait = wait          # a function that completes this future when called
        self._done = False
        self._value = None
        self._error = None

    @classmethod
    def of_work(cls, work, value):
        """The future of an async collective: its value is `value` once work.wait() returned."""
        fut = cls()

        def finish():
            try:
                work.wait()
            except BaseException as e:  # noqa: BLE001 (kept and raised by wait/value)
                fut.set_exception(e)
                return
            fut.set_result(value)

        fut._wait = finish
        return fut

    def done(self):
        return self._done

    def set_result(self, value):
        if self._done:
            raise RuntimeError("Future: the result is already set")
        self._value, self._done = value, True

    def set_exception(self, error):
        if self._done:
            raise RuntimeError("Future: the result is already set")
        self._error, self._done = error, True

    def wait(self):
        """Block until done; the value, or raise the error."""
        if not self._done:
            fn, self._wait = self._wait, None
            if fn is None:
                raise RuntimeError("Future.wait: nothing will ever complete this future")
            fn()
        if self._error is not None:
            raise self._error
        return self._value

    def value(self):
        if not self._done:
            raise RuntimeError("Future.value: not done yet (call wait())")
        if self._error is not None:
            raise self._error
        return self._value

    def then(self, callback):
        """A future of callback(self), run once self is done."""
        nxt = Future()

        def finish():
            try:
                self.wait()
                nxt.set_result(callback(self))
            except BaseException as e:  # noqa: BLE001
                nxt.set_exception(e)

        nxt._wait = finish
        return nxt
