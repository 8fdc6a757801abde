// Package feed queues a publisher's events for each of its subscribers: the
// agent's API watchers and the rules service's prompt and history clients.
//
// Trust boundary: a subscriber is usually a local client, possibly another
// user's, that may stop reading at any time. A Subscriber never blocks its
// publisher and never grows past its bounds: its queue starts empty, grows
// only with the events not taken yet, up to a limit and, when a Budget is
// given, a share of the room several subscribers have together. Past them,
// Push refuses the event and the publisher drops the subscriber (Close).
package feed
