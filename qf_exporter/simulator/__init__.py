"""The simulated Qianfan: a world of runs that move over time, behind a fake gateway.

It may import qf_exporter.qianfan's signing and errors, qf_exporter.config and
qf_exporter.util; only the command line (``--demo``) and the tests import it.
"""

from qf_exporter.simulator.clock import ManualClock
from qf_exporter.simulator.faults import FAULT_KINDS, Fault
from qf_exporter.simulator.scenario import SimJob, SimRun, World, demo_world, fleet_world
from qf_exporter.simulator.server import QianfanSimulator

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "ManualClock",
    "QianfanSimulator",
    "SimJob",
    "SimRun",
    "World",
    "demo_world",
    "fleet_world",
]
