"""recsys: BERT4Rec sequential recommendation, from interaction log to top-k batch job."""

__version__ = "0.1.0"
