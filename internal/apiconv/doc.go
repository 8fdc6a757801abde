// Package apiconv converts between the agent API's protobuf messages
// (bastion.agent.v1) and Bastion's internal flow types, in one place for the
// agent, the rules service and the clients.
//
// Trust boundary: messages may come from a less trusted peer; conversions
// never panic, and values that do not parse become zero values (an invalid
// address, protocol 0, port 0), which no rule with that operand matches.
package apiconv
