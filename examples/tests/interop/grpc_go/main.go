// A grpc-go client (Debian's golang-google-grpc-dev) of our server: unary echo from 0
// bytes to 4 MiB, calls in flight at once, UNIMPLEMENTED, a deadline that expires, gzip,
// metadata, the health service, and every streaming shape of idl/stream.proto with
// thousands of messages. Messages are encoded by hand (a bytes field 1, an int32 field 2)
// through a pass-through codec, so that no protoc is needed.
//
// Usage: grpc_go HOST:PORT [CA_PEM] (over TLS, for host name localhost, when CA_PEM is
// given). Prints each check; "all checks passed" and exit status 0 when
// every one passed.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// raw passes messages through as bytes: the program encodes them itself.
type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "proto" }

func varint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// msg encodes { bytes msg = 1; int32 count = 2; } (count left out when 0).
func msg(m []byte, count int32) []byte {
	b := []byte{0x0a}
	b = varint(b, uint64(len(m)))
	b = append(b, m...)
	if count != 0 {
		b = append(b, 0x10)
		b = varint(b, uint64(int64(count)))
	}
	return b
}

// sleepRequest encodes SleepRequest { int32 ms = 1; bytes msg = 2; }.
func sleepRequest(ms int32, m []byte) []byte {
	b := varint([]byte{0x08}, uint64(ms))
	b = append(b, 0x12)
	b = varint(b, uint64(len(m)))
	return append(b, m...)
}

// field1 reads field 1 (bytes) of a message, or nil.
func field1(b []byte) []byte {
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		switch tag & 7 {
		case 0:
			for len(b) > 0 && b[0]&0x80 != 0 {
				b = b[1:]
			}
			b = b[1:]
		case 2:
			n, s := uint64(0), uint(0)
			for {
				c := b[0]
				b = b[1:]
				n |= uint64(c&0x7f) << s
				s += 7
				if c&0x80 == 0 {
					break
				}
			}
			if tag>>3 == 1 {
				return b[:n]
			}
			b = b[n:]
		default:
			return nil
		}
	}
	return nil
}

var failed = 0

func check(name string, ok bool, detail string) {
	if ok {
		fmt.Println("ok   " + name)
	} else {
		fmt.Println("FAIL " + name + ": " + detail)
		failed++
	}
}

func call(cc *grpc.ClientConn, method string, req []byte, timeout time.Duration, opts ...grpc.CallOption) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []byte
	err := cc.Invoke(ctx, method, &req, &out, opts...)
	return out, err
}

func unary(cc *grpc.ClientConn) {
	for _, n := range []int{0, 10, 100000, 4 << 20} {
		m := bytes.Repeat([]byte{'g'}, n)
		out, err := call(cc, "/echo.Echo/Echo", msg(m, 0), 10*time.Second)
		check(fmt.Sprintf("echo %d B", n), err == nil && bytes.Equal(field1(out), m), fmt.Sprint(err))
	}
	var wg sync.WaitGroup
	bad := make(chan string, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			m := []byte(fmt.Sprint(i))
			out, err := call(cc, "/echo.Echo/Echo", msg(m, 0), 10*time.Second)
			if err != nil || !bytes.Equal(field1(out), m) {
				bad <- fmt.Sprint(i, err)
			}
		}(i)
	}
	wg.Wait()
	close(bad)
	check("200 calls in flight", len(bad) == 0, <-bad)
	_, err := call(cc, "/echo.Echo/Nope", nil, 5*time.Second)
	check("UNIMPLEMENTED", status.Code(err) == codes.Unimplemented, fmt.Sprint(err))
	// Status details: grpc-go reads them into the status it returns.
	_, err = call(cc, "/streamer.Streamer/Sleep", sleepRequest(-1, nil), 5*time.Second)
	st := status.Convert(err)
	check("status details", st.Code() == codes.InvalidArgument && st.Proto().GetMessage() == "ms must not be negative", fmt.Sprint(err))
	_, err = call(cc, "/streamer.Streamer/Sleep", sleepRequest(1000, []byte("late")), 100*time.Millisecond)
	check("DEADLINE_EXCEEDED", status.Code(err) == codes.DeadlineExceeded, fmt.Sprint(err))
	m := bytes.Repeat([]byte("gzip "), 20000)
	out, err := call(cc, "/echo.Echo/Echo", msg(m, 0), 5*time.Second, grpc.UseCompressor("gzip"))
	check("gzip echo", err == nil && bytes.Equal(field1(out), m), fmt.Sprint(err))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-custom", "kept", "x-blob-bin", string([]byte{0, 1, 2, 255}))
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	var reply []byte
	req := msg([]byte("with metadata"), 0)
	err = cc.Invoke(ctx, "/echo.Echo/Echo", &req, &reply)
	cancel()
	check("a call with metadata (and a -bin key)", err == nil && string(field1(reply)) == "with metadata", fmt.Sprint(err))
	// Metadata back: the server's Sleep echoes x-echo-back and x-echo-back-bin.
	ctx = metadata.AppendToOutgoingContext(context.Background(), "x-echo-back", "go value", "x-echo-back-bin", string([]byte{9, 0, 255}))
	ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	var header metadata.MD
	req = sleepRequest(0, []byte("meta back"))
	err = cc.Invoke(ctx, "/streamer.Streamer/Sleep", &req, &reply, grpc.Header(&header))
	cancel()
	back := header.Get("x-echo-back")
	backBin := header.Get("x-echo-back-bin")
	check("reply metadata, text and binary", err == nil && len(back) == 1 && back[0] == "go value" &&
		len(backBin) == 1 && backBin[0] == string([]byte{9, 0, 255}), fmt.Sprint(err, header))
	out, err = call(cc, "/grpc.health.v1.Health/Check", []byte{0x0a, 9, 'e', 'c', 'h', 'o', '.', 'E', 'c', 'h', 'o'}, 5*time.Second)
	check("health Check", err == nil && bytes.Equal(out, []byte{0x08, 0x01}), fmt.Sprint(out, err))
}

func open(cc *grpc.ClientConn, method string, client, server bool, timeout time.Duration) (grpc.ClientStream, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: client, ServerStreams: server}, method)
	if err != nil {
		fmt.Println("FAIL open " + method + ": " + err.Error())
		os.Exit(1)
	}
	return s, cancel
}

func recvAll(s grpc.ClientStream) ([][]byte, error) {
	var got [][]byte
	for {
		var m []byte
		if err := s.RecvMsg(&m); err != nil {
			if err == io.EOF {
				return got, nil
			}
			return got, err
		}
		got = append(got, field1(m))
	}
}

func streams(cc *grpc.ClientConn) {
	// Server streaming.
	s, cancel := open(cc, "/streamer.Streamer/Repeat", false, true, 30*time.Second)
	req := msg([]byte("go repeat"), 5000)
	s.SendMsg(&req)
	s.CloseSend()
	got, err := recvAll(s)
	cancel()
	ok := err == nil && len(got) == 5000
	for _, g := range got {
		ok = ok && string(g) == "go repeat"
	}
	check("Repeat 5000", ok, fmt.Sprint(len(got), err))
	s, cancel = open(cc, "/streamer.Streamer/Repeat", false, true, 5*time.Second)
	req = msg([]byte("x"), -1)
	s.SendMsg(&req)
	s.CloseSend()
	_, err = recvAll(s)
	cancel()
	check("Repeat with a negative count is INVALID_ARGUMENT", status.Code(err) == codes.InvalidArgument, fmt.Sprint(err))
	// Client streaming.
	s, cancel = open(cc, "/streamer.Streamer/Concat", true, false, 30*time.Second)
	var want []byte
	for i := 0; i < 3000; i++ {
		p := []byte(fmt.Sprintf("%d,", i))
		want = append(want, p...)
		m := msg(p, 0)
		s.SendMsg(&m)
	}
	s.CloseSend()
	got, err = recvAll(s)
	cancel()
	check("Concat 3000", err == nil && len(got) == 1 && bytes.Equal(got[0], want), fmt.Sprint(err))
	// Bidirectional, in lock step, then all at once.
	s, cancel = open(cc, "/streamer.Streamer/Chat", true, true, 30*time.Second)
	ok = true
	for i := 0; i < 500; i++ {
		m := msg([]byte(fmt.Sprint("step ", i)), 0)
		s.SendMsg(&m)
		var r []byte
		if err := s.RecvMsg(&r); err != nil || string(field1(r)) != fmt.Sprint("step ", i) {
			ok = false
			break
		}
	}
	s.CloseSend()
	rest, err := recvAll(s)
	cancel()
	check("Chat in lock step, 500 rounds", ok && err == nil && len(rest) == 0, fmt.Sprint(err))
	s, cancel = open(cc, "/streamer.Streamer/Chat", true, true, 30*time.Second)
	go func() {
		for i := 0; i < 3000; i++ {
			m := msg([]byte(fmt.Sprint("chat ", i)), 0)
			s.SendMsg(&m)
		}
		s.CloseSend()
	}()
	got, err = recvAll(s)
	cancel()
	ok = err == nil && len(got) == 3000
	for i, g := range got {
		ok = ok && string(g) == fmt.Sprint("chat ", i)
	}
	check("Chat 3000 at once", ok, fmt.Sprint(len(got), err))
	// gzip on a stream.
	ctx, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	gz, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/streamer.Streamer/Repeat", grpc.UseCompressor("gzip"))
	if err == nil {
		req = msg(bytes.Repeat([]byte("z"), 10000), 200)
		gz.SendMsg(&req)
		gz.CloseSend()
		got, err = recvAll(gz)
	}
	cancel2()
	check("gzip Repeat", err == nil && len(got) == 200 && len(got[0]) == 10000, fmt.Sprint(len(got), err))
	// A deadline mid-stream.
	s, cancel = open(cc, "/streamer.Streamer/Chat", true, true, 300*time.Millisecond)
	m := msg([]byte("before"), 0)
	s.SendMsg(&m)
	var first []byte
	s.RecvMsg(&first)
	_, err = recvAll(s)
	cancel()
	check("a stream's deadline", string(field1(first)) == "before" && status.Code(err) == codes.DeadlineExceeded, fmt.Sprint(err))
}

func main() {
	encoding.RegisterCodec(raw{})
	security := grpc.WithInsecure()
	if len(os.Args) > 2 {
		creds, err := credentials.NewClientTLSFromFile(os.Args[2], "localhost")
		if err != nil {
			fmt.Println("FAIL " + err.Error())
			os.Exit(1)
		}
		security = grpc.WithTransportCredentials(creds)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := grpc.DialContext(ctx, os.Args[1], security, grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		fmt.Println("FAIL dial: " + err.Error())
		os.Exit(1)
	}
	defer cc.Close()
	unary(cc)
	streams(cc)
	if failed > 0 {
		os.Exit(1)
	}
	fmt.Println("all checks passed")
}
