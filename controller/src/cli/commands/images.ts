/** `drover images ls|inspect NAME|rm NAME`: the image sets cluster checkpoints made. */
import type { Argv, CommandModule } from 'yargs';
import { callController, type GlobalArgs } from '../context.js';
import { setDetail, setsTable } from '../cluster-report.js';
import { imageContentsReport } from '../image-contents.js';
import { reportUnanswered, strictOption } from '../unanswered.js';

type Named = GlobalArgs & { name: string };

const ls: CommandModule<GlobalArgs, GlobalArgs & { strict: boolean }> = {
  command: 'ls',
  describe: 'List image sets, newest first',
  builder: (y) => strictOption(y),
  handler: async (argv) => {
    const reply = await callController(argv, 'images-list', {}, (r) => setsTable(r.sets));
    reportUnanswered(reply, 'sets still being made there cannot complete yet', argv.strict);
  },
};

const inspect: CommandModule<GlobalArgs, Named & { job: string | undefined }> = {
  command: 'inspect <name>',
  describe:
    "Show an image set: its jobs, hosts, files and sizes; with --job, what is inside that job's checkpoint",
  builder: (y) =>
    y.positional('name', { type: 'string', demandOption: true }).option('job', {
      type: 'string',
      describe:
        "decode this job's images (its id or name): processes, open files, sockets, memory mappings",
    }),
  handler: async (argv) => {
    if (argv.job !== undefined) {
      await callController(
        argv,
        'images-decode',
        { name: argv.name, job: argv.job },
        imageContentsReport,
        undefined,
        { job: '--job' },
      );
      return;
    }
    await callController(argv, 'images-inspect', { name: argv.name }, setDetail);
  },
};

const rm: CommandModule<GlobalArgs, Named> = {
  command: 'rm <name>',
  describe: 'Delete an image set and its stored images',
  builder: (y) => y.positional('name', { type: 'string', demandOption: true }),
  handler: async (argv) => {
    await callController(
      argv,
      'images-delete',
      { name: argv.name },
      (r) => `deleted image set ${argv.name} (${r.objects} objects)`,
    );
  },
};

export const imagesCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'images',
  describe: 'Image sets: ls, inspect NAME, rm NAME',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .command(ls)
      .command(inspect)
      .command(rm)
      .demandCommand(1, 'images: ls, inspect NAME or rm NAME'),
  handler: () => {},
};
