"""What the script task types (`shell`, `shell.script`, `python`, `python.commands`) share.

Kestra's properties of its script tasks (`beforeCommands`, `env`, `inputFiles`,
`outputFiles`) and one way to run them: the input files are written (or copied from
the file storage), then one `/bin/sh` script runs with `set -e` (`beforeCommands`, then
the task's own commands: the first failing command ends the task), then the output
files are stored (their URIs are the output `outputFiles`). A storage URI written in the
commands or the script (`cat {{ outputs.t.outputFiles['a.csv'] }}`) becomes the path of
a local copy of its file first, as in Kestra. The script goes to the
attempt's own directory, never into a user's `workingDirectory`; a file (not `sh -c`)
has no argument-length limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from headrace.connectors._process import ENV_DESCRIPTION, run_process
from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.connectors.namespace_files import NamespaceFiles, add_namespace_files
from headrace.connectors.script_files import (
    STORAGE_URI_IN_TEXT,
    check_input_files,
    check_output_pattern,
    localize_storage_uris,
    store_output_files,
    write_input_files,
)

SCRIPT_NAME = ".headrace-commands.sh"

InputFiles = Annotated[dict[str, str], AfterValidator(check_input_files)]
OutputPattern = Annotated[str, AfterValidator(check_output_pattern)]


class ProgramProperties(ConnectorProperties):
    """What every task type that runs a program on the worker takes (the script types,
    dbt): its environment, and files written for it before it runs."""

    env: dict[str, str] = Field(default_factory=dict, description=ENV_DESCRIPTION)
    input_files: InputFiles = Field(
        default_factory=dict,
        alias="inputFiles",
        description="Files written into the working directory before anything runs:"
        " relative path -> text (subdirectories are created), or -> a storage URI"
        " (`headrace:///…`, such as a STORE result's `{{ outputs.query.uri }}`), whose file"
        " is copied in; only the flow's own namespace's files are read. Absolute paths,"
        " `..` and symbolic links on the way are refused.",
    )
    namespace_files: NamespaceFiles = Field(
        default_factory=NamespaceFiles,
        alias="namespaceFiles",
        description="The flow's namespace's files (`headrace namespace files`) copied into"
        " the working directory before anything runs (`enabled: true`), at their paths"
        " relative to the namespace's root; an input file of the same path wins.",
    )
    # Kestra's ways to choose where a script runs: headrace runs it as a process of the
    # worker, so they are accepted and ignored (a warning at validation says so).
    task_runner: Any = Field(
        default=None, alias="taskRunner", description="Kestra's; ignored with a warning."
    )
    container_image: Any = Field(
        default=None, alias="containerImage", description="Kestra's; ignored with a warning."
    )
    docker: Any = Field(default=None, description="Kestra's; ignored with a warning.")
    runner: Any = Field(default=None, description="Kestra's; ignored with a warning.")


class ScriptTaskProperties(ProgramProperties):
    """The properties every script task type has."""

    before_commands: list[str] = Field(
        default_factory=list,
        alias="beforeCommands",
        description="Commands run first, in the same `/bin/sh` script with `set -e`: a"
        " failing one ends the task before its own commands run.",
    )
    output_files: list[OutputPattern] | None = Field(
        default=None,
        alias="outputFiles",
        description="Files kept after a successful run: paths relative to the working"
        " directory, or glob patterns (`*.csv`, `out/**/*.json`). Each is copied to the"
        " file storage; the output `outputFiles` maps its path to its storage URI"
        " (`headrace:///…`), for `{{ read(...) }}`, a later task's `inputFiles` or a"
        " download. A path without wildcards that the task did not create fails the task.",
    )


async def local_paths_for_uris(texts: list[str], context: TaskContext) -> list[str]:
    """`texts` (a task's commands, its script) with each storage URI replaced by the
    path of a local copy of its file, as Kestra's script tasks do
    (`script_files.localize_storage_uris`)."""
    if not any(STORAGE_URI_IN_TEXT.search(text) for text in texts):
        return texts
    return await asyncio.to_thread(
        localize_storage_uris, texts, context.workdir, context.files, "commands"
    )


def shell_script(before_commands: Sequence[str], body: str) -> str:
    return "set -e\n" + "".join(f"{line}\n" for line in before_commands) + body + "\n"


async def run_script(
    properties: ScriptTaskProperties,
    context: TaskContext,
    body: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    reserved: Iterable[str] = (),
) -> dict[str, Any]:
    """Copy the namespace files asked for and write the input files into `cwd`, run `beforeCommands` and `body` there with
    `env`, and return the outputs (with `outputFiles`, path -> storage URI, when the task
    asked for some).

    `reserved`: names in `cwd` that are the task's own (its script file): input files may
    not take them, and output patterns do not collect them.
    """
    reserved = tuple(reserved)
    await add_namespace_files(properties.namespace_files, context, cwd, reserved)
    if properties.input_files:
        await asyncio.to_thread(
            write_input_files, cwd, properties.input_files, reserved, stored=context.files
        )
    *before, body = await local_paths_for_uris([*properties.before_commands, body], context)
    script = context.workdir / SCRIPT_NAME
    script.write_text(shell_script(before, body), encoding="utf-8")
    outputs = await run_process(["/bin/sh", str(script)], context, env=env, cwd=cwd)
    if properties.output_files is not None:
        outputs["outputFiles"] = await asyncio.to_thread(
            store_output_files,
            cwd,
            properties.output_files,
            reserved,
            stored=context.files,
            mask=context.mask,
        )
    return outputs
