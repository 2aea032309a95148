"""Shell completion for the plugin: kubectl's plugin completion protocol
(``kubectl_complete-bgjob``) and ``kubectl bgjob completion bash|zsh``."""

import argparse
from collections.abc import Callable, Sequence

from bgjob.clisession import Session


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def candidates(parser: argparse.ArgumentParser, words: Sequence[str],
               names: Callable[[str | None], list[str]]) -> list[str]:
    """What may come next after ``words`` (the last one being typed): verbs, a verb's flags,
    or BackgroundJob names (``names(namespace)``, asked only when a name fits)."""
    verbs = _verbs(parser)
    *done, cur = [*words] or [""]
    flags_with_value = {"--kubeconfig", "--context", "-n", "--namespace"}
    verb, namespace, skip = None, None, False
    positional: list[str] = []  # after the verb
    for i, word in enumerate(done):
        if skip:
            skip = False
            continue
        if word in flags_with_value or (verb and word in ("--param", "--run", "--timeout",
                                                          "-o", "--output", "-c", "--tz",
                                                          "--count", "--from", "--name")):
            skip = True
            if word in ("-n", "--namespace") and i + 1 < len(done):
                namespace = done[i + 1]
            continue
        if not word.startswith("-"):
            if verb is None:
                verb = word
            else:
                positional.append(word)
    if verb is None:
        return sorted(v for v in verbs if v.startswith(cur))
    p = verbs.get(verb)
    if p is None:
        return []
    if cur.startswith("-"):
        return sorted(o for a in p._actions for o in a.option_strings if o.startswith(cur))
    if any(a.dest == "name" for a in p._actions) and not positional:
        return sorted(n for n in names(namespace) if n.startswith(cur))
    return []


def _live_names(args: argparse.Namespace) -> Callable[[str | None], list[str]]:
    def names(namespace: str | None) -> list[str]:
        try:
            args.namespace = namespace or args.namespace
            return [i["metadata"]["name"] for i in Session(args).all()]
        except Exception:
            return []
    return names


def completion_script(shell: str) -> str:
    """Completion for ``kubectl-bgjob``; ``kubectl bgjob`` itself completes through the
    ``kubectl_complete-bgjob`` executable that kubectl (1.26+) looks for on PATH."""
    script = """# kubectl bgjob completion; see the README for how to install it.
_kubectl_bgjob() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  COMPREPLY=($(compgen -W "$(kubectl-bgjob __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" \
    "$cur" 2>/dev/null)" -- "$cur"))
}
complete -F _kubectl_bgjob kubectl-bgjob
"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def cmd_completion(args: argparse.Namespace) -> int:
    print(completion_script(args.shell), end="")
    return 0
