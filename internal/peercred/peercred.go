package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Cred is the identity of the process that opened a connection.
type Cred struct {
	PID uint32
	UID uint32
	GID uint32
}

// IsRoot reports whether the caller runs as UID 0.
func (c Cred) IsRoot() bool { return c.UID == 0 }

// errNotUnix is Read's error for a connection that is not a Unix socket.
var errNotUnix = errors.New("not a Unix socket")

// Read returns the peer credentials of a Unix socket connection (or of a
// wrapper of one, such as LimitListener's).
func Read(conn net.Conn) (Cred, error) {
	var uc syscall.Conn
	switch c := conn.(type) {
	case *net.UnixConn:
		uc = c
	case *countedConn:
		uc = c
	default:
		return Cred{}, fmt.Errorf("read peer credentials: %T: %w", conn, errNotUnix)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	var (
		ucred  *unix.Ucred
		optErr error
	)
	if err := raw.Control(func(fd uintptr) {
		ucred, optErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	if optErr != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", optErr)
	}
	return Cred{PID: uint32(ucred.Pid), UID: ucred.Uid, GID: ucred.Gid}, nil
}

// AuthInfo is the credentials.AuthInfo that TransportCredentials attaches to
// every connection.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Cred Cred
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return "peercred" }

// TransportCredentials returns gRPC server credentials that read SO_PEERCRED
// during the handshake and reject connections that are not Unix sockets.
func TransportCredentials() credentials.TransportCredentials { return transport{} }

type transport struct{}

func (transport) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cred, err := Read(conn)
	if err != nil {
		return nil, nil, err
	}
	return conn, AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Cred:           cred,
	}, nil
}

func (transport) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (transport) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (t transport) Clone() credentials.TransportCredentials { return t }

func (transport) OverrideServerName(string) error { return nil }

// ErrNoCred is returned by FromContext when the call did not arrive over a
// connection authenticated by TransportCredentials.
var ErrNoCred = errors.New("no peer credentials on this call")

// FromContext returns the caller's credentials inside a gRPC handler.
func FromContext(ctx context.Context) (Cred, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Cred{}, ErrNoCred
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return Cred{}, ErrNoCred
	}
	return ai.Cred, nil
}
