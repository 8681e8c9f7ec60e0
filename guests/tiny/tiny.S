/*
 * cellvisor's tiny test guest: a 64-bit "kernel" for cellvisor's VMM that does its work in
 * ring 3, where this machine's nested KVM runs guest code at native speed. The VMM enters it
 * like a Linux kernel (64-bit, ring 0, paging on, the VMM's GDT: user code 0x23, user data
 * 0x2b); it drops to ring 3 with IOPL 3 (port I/O allowed, interrupts off) and then:
 *   - prints a banner on the serial port (COM1, 0x3f8),
 *   - times EXITS port writes to port 0x80 (each one an exit to the VMM) with rdtsc, in ring 3
 *     and (timed before the drop) in ring 0, like the usual KVM exit probes,
 *   - reads an unbacked MMIO address (an MMIO exit; it must read as all ones),
 *   - prints the figures, and resets the machine through the i8042 (out 0x64, 0xfe).
 * Build: as --64 -o tiny.o tiny.S && ld -static -nostdlib -Ttext=0x200000 -e _start -o tiny.elf tiny.o
 */
        .intel_syntax noprefix
        .code64
        .set COM1, 0x3f8
        .set EXITS, 1000
        .set MMIO, 0xd0000000

/* Time EXITS port writes to port 0x80 (after one warm-up): TSC ticks per exit into DST. */
        .macro time_exits dst
        out 0x80, al
        rdtsc
        shl rdx, 32
        or rax, rdx
        mov r12, rax
        mov ecx, EXITS
1:      out 0x80, al
        dec ecx
        jnz 1b
        rdtsc
        shl rdx, 32
        or rax, rdx
        sub rax, r12
        xor edx, edx
        mov rcx, EXITS
        div rcx
        mov \dst, rax
        .endm

        .text
        .globl _start
_start:
        cli
        /* Exit round trips from ring 0 first. */
        time_exits r14                  /* TSC ticks per exit, ring 0 */
        push 0x2b                       /* ss: user data, RPL 3 */
        push 0x70000                    /* rsp: the user stack */
        push 0x3002                     /* rflags: IOPL 3, interrupts off */
        push 0x23                       /* cs: user code, RPL 3 */
        lea rax, [rip + user]
        push rax
        iretq

user:   lea rsi, [rip + banner]
        call puts

        /* Exit round trips from ring 3. */
        time_exits r13                  /* TSC ticks per exit, ring 3 */
        lea rsi, [rip + exits]
        call puts
        mov rax, r13
        call putnum
        lea rsi, [rip + ticks]
        call puts
        lea rsi, [rip + exits0]
        call puts
        mov rax, r14
        call putnum
        lea rsi, [rip + ticks]
        call puts

        /* An MMIO read where no device is: all ones. */
        mov eax, MMIO
        mov eax, [rax]
        lea rsi, [rip + mmio_ok]
        cmp eax, 0xffffffff
        je 2f
        lea rsi, [rip + mmio_bad]
2:      call puts

        lea rsi, [rip + bye]
        call puts
        mov al, 0xfe                    /* i8042: pulse the CPU reset line */
        out 0x64, al
3:      jmp 3b

/* Print the NUL-terminated string at rsi. */
puts:   lodsb
        test al, al
        jz 1f
        mov dx, COM1
        out dx, al
        jmp puts
1:      ret

/* Print rax in decimal. */
putnum: lea rdi, [rip + numbuf + 20]
        mov byte ptr [rdi], 0
        mov rcx, 10
1:      xor edx, edx
        div rcx
        add dl, '0'
        dec rdi
        mov [rdi], dl
        test rax, rax
        jnz 1b
        mov rsi, rdi
        jmp puts

        .data
banner: .asciz "tiny guest: up in ring 3\n"
exits:  .asciz "tiny guest: exit round trip "
exits0: .asciz "tiny guest: exit round trip from ring 0 "
ticks:  .asciz " tsc ticks\n"
mmio_ok: .asciz "tiny guest: mmio read ok\n"
mmio_bad: .asciz "tiny guest: mmio read WRONG\n"
bye:    .asciz "tiny guest: done, resetting\n"
numbuf: .space 24
