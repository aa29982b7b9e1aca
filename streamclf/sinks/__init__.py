"""Event sinks that send a run's events out of the process (the last stage of the flow
media -> engine -> live -> sinks). The sink interface and the bus are in
:mod:`streamclf.live.sinks`; the JSON Lines log, the status line and the web hub sink live
beside what they serve."""
