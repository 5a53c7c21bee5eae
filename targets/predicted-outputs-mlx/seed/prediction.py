"""Where the output stands in the predicted tokens, and the draft that follows from there."""

NGRAM = 3


class Prediction:
    """`at` is the index of the predicted token expected next, or None once the output left the prediction."""

    def __init__(self, tokens: list[int], realign: bool):
        self.tokens = tokens
        self.realign = realign
        self.at: int | None = 0 if tokens else None
        self.last = 0

    def follow(self, token: int) -> None:
        if self.at is not None and self.at < len(self.tokens) and self.tokens[self.at] == token:
            self.at += 1
            self.last = self.at
        else:
            self.at = None

    def draft(self, output: list[int], k: int) -> list[int]:
        if self.at is None and self.realign:
            self.at = self.find(output[-NGRAM:])
        if self.at is None or k <= 0:
            return []
        return self.tokens[self.at : self.at + k]

    def find(self, tail: list[int]) -> int | None:
        """The index just after the first occurrence of tail at or after the last agreed position, else anywhere."""
        n = len(tail)
        if n < NGRAM:
            return None
        ends = [i + n for i in range(len(self.tokens) - n + 1) if self.tokens[i : i + n] == tail]
        later = [end for end in ends if end >= self.last]
        return (later or ends or [None])[0]
