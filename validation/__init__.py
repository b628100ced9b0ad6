"""The validation service: JMeter test plans from yaml, master/slave runs and their results.

* ``plan``    the test-plan yaml (the original guide's syntax plus headers, body, https and
              query strings) -> a checked ``TestPlan``; errors name the field.
* ``jmx``     ``TestPlan`` -> a JMeter JMX document.
* ``jmeter``  the Apache JMeter install (home layout, command lines).
* ``runner``  one JMeter run: master, optional local JMeter servers (slaves), stopping.
* ``results`` the JTL CSV, the summariser lines of the log, the per-label summary.
* ``server``  the gRPC service (package ``jmeter``, service ``Controller``).
* ``client``  the gRPC client functions cloverctl and the controller call.
* ``local``   the service as a part of the local stack (``cloverctl local up validation``).
"""
