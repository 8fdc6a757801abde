package uiserver

import (
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
)

type statusCounts struct {
	agent                  agentv1.AgentServiceClient
	promptClients, prompts int
	rules                  int
	decideLater            int
}

func (s *Service) counts() statusCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return statusCounts{
		agent: s.agent, promptClients: len(s.subs), prompts: len(s.prompts), rules: len(s.active),
		decideLater: len(s.laterKeys),
	}
}
