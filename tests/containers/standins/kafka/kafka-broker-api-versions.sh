#!/bin/sh
# As the distribution's script: the tools' own small log configuration, KAFKA_HEAP_OPTS from the environment.
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    -cp '/opt/kafka/libs/*' org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
