"""Every test here starts with no tracking URI set and leaves no MLflow run open."""

import pytest

from tests.mlflow_store import isolated_tracking_uri

_isolated_tracking_uri = pytest.fixture(autouse=True)(isolated_tracking_uri)
