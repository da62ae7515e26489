"""The help formatter of every ``adasparse`` command: each option's help ends with its default."""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``argparse.ArgumentDefaultsHelpFormatter``, but silent where there is no default to show (``None``,
    ``False`` of a flag) or the help already says it (``default:`` in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or silent or not action.option_strings:  # `is`: a default of 0 is shown
            return text
        return super()._get_help_string(action)
