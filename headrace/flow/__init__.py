"""The flow language: typed models, the YAML loader and its errors, execution inputs."""

from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.inputs import InputValidationError, coerce_input, resolve_inputs
from headrace.flow.loader import load_flow, load_flow_file
from headrace.flow.model import Flow, Input, InputType, RetryPolicy, Task, Trigger

__all__ = [
    "Flow",
    "FlowError",
    "FlowValidationError",
    "Input",
    "InputType",
    "InputValidationError",
    "RetryPolicy",
    "Task",
    "Trigger",
    "coerce_input",
    "load_flow",
    "load_flow_file",
    "resolve_inputs",
]
