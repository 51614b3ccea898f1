"""noojee-sim: an HTTP simulator of the Noojee Contact CampaignAPI for tests, demos and benchmarks.

>>> from target_noojee.simulator import Simulator
>>> with Simulator(api_key="k", slots=4, service_ms=0) as sim:  # doctest: +SKIP
...     print(sim.url, sim.leads(41))
"""

from target_noojee.simulator.app import Simulator
from target_noojee.simulator.fixture import DEFAULT_FIXTURE, Fixture

__all__ = ["DEFAULT_FIXTURE", "Fixture", "Simulator"]
