"""The warehouse: DuckDB connection, migrations, bulk writer and the Python API."""

from xling.warehouse.api import Warehouse
from xling.warehouse.errors import XlingError

__all__ = ["Warehouse", "XlingError"]
