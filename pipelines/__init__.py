"""koe (声): voice-of-the-customer pipeline stages.

One module per stage; each exposes pure functions ``f(frame, params) -> frame`` and a
pydantic ``Params`` model for its section of ``params.yaml``.
"""

__version__ = "0.1.0"
