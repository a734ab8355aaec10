import { Controller } from '@nestjs/common';
import { Ctx, EventPattern, Payload } from '@nestjs/microservices';
import { JetStreamContext, parseTriggerPayload, SUBJECTS, TerminateMessage } from '@app/common';
import { DumperService } from './dumper.service';

@Controller()
export class DumperController {
  constructor(private readonly dumper: DumperService) {}

  /** Acked (by the transport) only after snapshot.ready or snapshot.failed has been stored. */
  @EventPattern<string>(SUBJECTS.trigger)
  async onTrigger(@Payload() body: unknown, @Ctx() context: JetStreamContext): Promise<void> {
    // An InvalidMessageError terminates the message (TerminateMessageFilter). "Today" is the day
    // the trigger was published, even if it is delivered again later.
    const date = this.dumper.resolveDate(parseTriggerPayload(body), context.getMessage().time);
    const outcome = await this.dumper.dump(date, context.getShutdownSignal());
    if (outcome.status === 'failed') throw new TerminateMessage(`dump of ${date} failed: ${outcome.error}`);
  }
}
