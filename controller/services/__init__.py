"""What the controller does, independent of HTTP, one service a domain: ``visibility`` (the
collector and the analysed results), ``chain`` (the sample chain, its IDS and the servers'
uploads) and ``validation`` (the JMeter load tests). The REST routes (``controller.api``) and the
dashboard each call the service they need; ``compose.Services`` holds the three and the Redis
connections they share.

Relays go through the other rooms' client modules (``collector.client``, ``sdc.grpc_client``,
``validation.client``); their failures become ApiErrors with the original controller's texts
("Error connecting to LB via gRPC", "Invalid value in IDS rule json/yaml", ...) and a status a
script can act on: 400 bad input (naming the field), 404 nothing there, 409 wrong state,
503 a service that cannot be reached, 500 a service that failed.
"""
