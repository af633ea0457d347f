from .encoders.modules import GeneralConditioner  # noqa: F401  (sgm/modules/__init__.py exports it)
