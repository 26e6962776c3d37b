"""The one error type that entry points turn into a one-line message and a non-zero exit."""


class UserError(ValueError):
  """Bad input from a user: an unknown name, option or value, or a missing or corrupt file.

  The message is one line that names the problem and, where there are any, the valid choices.
  Entry points print it as `error: <message>` and exit with status 2; nothing already written is
  touched.
  """


def choices_message(what: str, value: object, valid) -> str:
  """`unknown dataset 'foo'; valid choices: a, b, c` for error messages."""
  return f"unknown {what} {value!r}; valid choices: {', '.join(map(str, valid))}"


def error_line(e: Exception) -> str:
  """The one line an entry point prints for a `UserError` or an `OSError` (the workdir or a dataset on
  disk: permissions, space, a file in the way): `error: <message>` with the file an OSError names."""
  if isinstance(e, OSError):
    return f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
  return f"error: {e}"


USER_ERROR_EXIT_CODE = 2  # an entry point's exit status after printing `error: <message>`
DIVERGED_EXIT_CODE = 3  # training stopped on a non-finite loss, gradient or parameter
