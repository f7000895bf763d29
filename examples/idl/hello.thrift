// The quick start's service in Thrift: the twin of hello.proto.
namespace rs hello_thrift

struct Request {
    1: string name,
}

struct Response {
    1: string message,
}

service Hello {
    Response SayHello(1: Request req),
}
