"""Recipients' preferences: context types, preference pages, signed links, digests, unsubscribe."""
