// Included by kitchen_sink.thrift: cross-file references.
namespace rs shared

enum Level { LOW, MEDIUM, HIGH }

struct Point {
    1: double x,
    2: double y,
}

const i32 SHARED_LIMIT = 100
