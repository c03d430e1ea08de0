"""The flow language: typed models, the YAML loader and its errors, execution inputs."""

from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.inputs import (
    InputValidationError,
    coerce_input,
    resolve_inputs,
    validate_input,
)
from headrace.flow.loader import load_flow, load_flow_file, load_flow_with_warnings
from headrace.flow.model import (
    Concurrency,
    ConcurrencyBehavior,
    Flow,
    FlowOutput,
    Input,
    InputType,
    PluginDefault,
    RetryPolicy,
    Task,
    Trigger,
)

__all__ = [
    "Concurrency",
    "ConcurrencyBehavior",
    "Flow",
    "FlowError",
    "FlowOutput",
    "FlowValidationError",
    "Input",
    "InputType",
    "InputValidationError",
    "PluginDefault",
    "RetryPolicy",
    "Task",
    "Trigger",
    "coerce_input",
    "load_flow",
    "load_flow_file",
    "load_flow_with_warnings",
    "resolve_inputs",
    "validate_input",
]
