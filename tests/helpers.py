"""Small helpers shared by the tests."""


class InterruptAt:
    """Trainer hook that raises KeyboardInterrupt at the given step, as a user's Ctrl-C would."""

    def __init__(self, step: int):
        self.step, self.n = step, 0

    def after_step(self) -> None:
        self.n += 1
        if self.n == self.step:
            raise KeyboardInterrupt
