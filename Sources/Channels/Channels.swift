// Phoenix Channels V2 over libwebsockets (issue 3).
