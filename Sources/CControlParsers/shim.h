// The control API's parsers, from Debian's packages: http-parser (libhttp-parser-dev) for
// HTTP/1.1 requests and cJSON (libcjson-dev) for their JSON bodies. Only the control thread
// uses them, never the data path.
#include <http_parser.h>
#include <cjson/cJSON.h>
