"""Q1 and Q2.1 of the study, answered by computation rather than restated.

- stack.py: a layer-stack calculator (`--stack "conv:8:5 pool:4:2 linear:10"`) that derives
  every output shape and parameter count with its formula, flooring like torch, and
  cross-checks the total and the output shape against the same stack built in torch.
- attention.py: Q1.3, P = softmax(X A X^T) with rank(A) <= d, and the invariance of P to
  W_Q -> W_Q B, W_K -> W_K B^{-T}; measured in float64.
- equivariance.py: Q2.1, translation equivariance of convolution and the approximate
  invariance that max pooling adds; measured on a random layer and image.
- answer.py: all of it as one JSON-ready dict (`answer()`).
- cli.py: `convattn theory`, laid out by the report's templates (theory.md.j2, stack.md.j2).
"""

# The study's Q1 networks: a 28x28x3 input, the CNN of Q1.1 and the MLP of Q1.2.
STUDY_INPUT = (28, 28, 3)
STUDY_CNN = "conv:8:5 pool:4:2 linear:10"
STUDY_MLP = "linear:100 linear:10"
