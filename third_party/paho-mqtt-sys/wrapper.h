#include <MQTTAsync.h>

