"""bgjob-operator: scheduled and on-demand background jobs on Kubernetes."""

__version__ = "0.1.0"
