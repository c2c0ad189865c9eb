import enum
import logging as _logging


class _Logging:
    @staticmethod
    def get_logger(name):
        logger = _logging.getLogger(name)
        if not hasattr(logger, "warning_once"):
            logger.warning_once = logger.warning
        return logger


logging = _Logging()


class PaddingStrategy(str, enum.Enum):
    LONGEST = "longest"
    MAX_LENGTH = "max_length"
    DO_NOT_PAD = "do_not_pad"


def _identity_decorator(*args, **kwargs):
    return lambda f: f


add_code_sample_docstrings = _identity_decorator
add_start_docstrings = _identity_decorator
add_start_docstrings_to_model_forward = _identity_decorator
