# Every construct the generator supports, compiled and run by tests/roundtrip.rs.
include "shared.thrift"
cpp_include "<unordered_map>"
namespace rs kitchen_sink
namespace cpp ks

typedef i64 Timestamp (python.type = "int")
typedef list<shared.Point> Path
typedef map<string, Timestamp> Clock

const Timestamp EPOCH = 0
const double PI = 3.14159
const string GREETING = 'it\'s "quoted"'
const binary MAGIC = "\x"
const bool ENABLED = true
const shared.Level DEFAULT_LEVEL = shared.Level.MEDIUM
const list<i32> PRIMES = [2, 3, 5, 7]
const set<string> NAMES = ["a", "b"]
const map<string, list<i16>> TABLE = {"one": [1], "none": []}
const shared.Point ORIGIN = {"x": 0, "y": 0.5}
const i32 LIMIT = shared.SHARED_LIMIT
const uuid NIL = "00000000-0000-0000-0000-000000000000"

/** A tree: recursive through a list and directly through `parent`. */
struct Node {
    1: required string name,
    2: list<Node> children,
    3: optional Node parent,
}

/** Shapes. */
union Shape {
    1: double circle_radius,
    2: shared.Point point,
    3: Path polygon,
    4: Shape nested,
}

enum Weekday {
    MONDAY = 1,
    TUESDAY,
    /** Midweek. */
    WEDNESDAY,
    SUNDAY = 7
}

struct Everything {
    1: required i64 id = 5;
    2: optional string note = "n/a";
    3: set<double> measures,
    4: map<double, string> by_measure,
    5: set<shared.Point> points,
    6: map<Weekday, set<i64>> schedule = {Weekday.MONDAY: [1, 2]},
    7: shared.Level level = shared.Level.HIGH,
    8: Shape shape,
    9: optional list<list<map<string, binary>>> deep,
    10: Clock clock,
    11: string type,
    12: i32 self,
    13: Timestamp at = EPOCH,
    14: bool flag = true,
    15: shared.Point origin = ORIGIN,
    16: optional Node tree,
    17: list<bool> bits,
    18: byte tiny = -1,
    19: i16 short_one = 300,
    20: double ratio = 2,
    21: Shape fallback = {"circle_radius": 1.5},
    22: optional shared.Point where = {"x": 1, "y": 2},
    23: uuid trace = "00112233-4455-6677-8899-AABBCCDDEEFF",
    24: optional set<uuid> seen,
}

// Names that generated code must not confuse with its own generics and locals.
struct R { 1: optional R r, 2: list<W> w, 3: i32 len, 4: i32 value, 5: i32 field }
struct W { 1: i32 l, 2: i32 item0 }
struct L { 1: optional L next }

exception NotFound {
    1: string what,
}

exception Overloaded {
    1: i32 retry_after_ms,
}

service Base {
    void ping(),
}

service Store extends Base {
    Everything fetch(1: i64 id, 2: optional shared.Level min_level) throws (1: NotFound missing, 2: Overloaded busy),
    oneway void log(1: string line),
    list<Node> trees(),
}
