// Package peercred identifies the local process at the other end of a Unix
// socket from the kernel's SO_PEERCRED, and carries that identity into gRPC
// handlers.
//
// Trust boundary: everything a client sends is untrusted; the credentials
// read here come from the kernel at connection time and are the only thing
// Bastion's servers authorise on. They are read once per connection, in the
// transport handshake, before any request is parsed.
package peercred
